"""The evaluation collector against RecBole's own, in one process on the same weights.

    python -m benchmarks.collector_speed --dataset=amazon-sports

Scores every validation user of a freshly initialised SASRec (whole-sequence trainer) twice
with each collector and prints the CPU seconds of each pass and its metrics, which must agree.
"""

import argparse
import time

import torch

from recbole.evaluator import Collector

from recbole_recgpt.config import create_config
from recbole_recgpt.quick_start import build


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {"baseline_trainer": "whole_sequence", "show_progress": False}
    if args.data_path:
        settings["data_path"] = args.data_path
    config = create_config("SASRec", args.dataset, config_dict=settings)
    _, (train_data, valid_data, _), _, trainer = build(config)
    results = {}
    for name, collector in (("TopkCollector", trainer.eval_collector), ("RecBole Collector", Collector(config))):
        collector.data_collect(train_data)
        trainer.eval_collector = collector
        for repeat in range(args.repeats):
            start = time.process_time()
            results[name] = dict(trainer.evaluate(valid_data, load_best_model=False))
            print(f"{name} pass {repeat + 1}: {time.process_time() - start:.2f} CPU s", flush=True)
    print("metrics agree" if len(set(map(str, results.values()))) == 1 else f"metrics DIFFER: {results}")


if __name__ == "__main__":
    main()
