"""Side-by-side table of RecGPT and RecBole baselines on one dataset, same protocol.

    python benchmarks/compare.py --dataset=amazon-beauty --data_path=../shared/datasets \\
        --models=RecGPT,SASRec,GRU4Rec,Pop --out=results/compare-amazon-beauty

Each model runs through ``run_recgpt`` (shared properties/overall.yaml, its own model yaml).
Finished models are kept in ``<out>.json`` and skipped when the command is run again, so an
interrupted comparison resumes; ``<out>.md`` is the table, with the trainer of every row.
Per-model overrides: ``--SASRec.baseline_trainer=whole_sequence``; ``--key=value`` for all.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recbole_recgpt.quick_start import run_recgpt  # noqa: E402

METRICS = ("hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20")


def trainer_of(result):
    if result["model"] == "RecGPT":
        return "RecGPTTrainer"
    return "whole-sequence" if result["config"].get("baseline_trainer") == "whole_sequence" else "RecBole Trainer"


def table(report):
    lines = [
        f"# {report['dataset']}: test set, full ranking, leave-one-out",
        "",
        f"Command: `{report['command']}` (seed {report['seed']}; each row names the git revision that produced it)",
        "",
        "| model | trainer | " + " | ".join(m.upper().replace("HIT", "HR") for m in METRICS)
        + " | epochs | wall s | git |",
        "| --- | --- | " + " | ".join("---:" for _ in METRICS) + " | ---: | ---: | --- |",
    ]
    for model, result in report["results"].items():
        epochs = "+".join(str(p["epochs"]) for p in result["phases"].values())
        cells = " | ".join(f"{result['test_result'][m]:.4f}" for m in METRICS)
        revision = (result.get("git_revision") or report.get("git_revision") or "?")[:7]
        lines.append(f"| {model} | {trainer_of(result)} | {cells} | {epochs} | {result['wall_seconds']:.0f} | {revision} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--models", default="RecGPT,SASRec,GRU4Rec,Pop")
    parser.add_argument("--out", default=None, help="output stem (default results/compare-<dataset>)")
    args, rest = parser.parse_known_args()
    shared, per_model = {}, {}
    for arg in rest:
        key, _, value = arg[2:].partition("=")
        model, dot, name = key.partition(".")
        if dot:
            per_model.setdefault(model, {})[name] = value
        else:
            shared[key] = value
    if args.data_path:
        shared["data_path"] = args.data_path
    out = Path(args.out or f"results/compare-{args.dataset}")
    out.parent.mkdir(parents=True, exist_ok=True)
    report_file = out.with_suffix(".json")
    report = json.loads(report_file.read_text()) if report_file.exists() else {"results": {}}
    revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    report.update(command=" ".join(["python", *sys.argv]), dataset=args.dataset)
    for result in report["results"].values():
        # Rows from before revisions were kept per row carry the report's.
        result.setdefault("git_revision", report.get("git_revision"))
    for model in args.models.split(","):
        if model in report["results"]:
            print(f"{model}: kept from the earlier run", flush=True)
            continue
        start = time.time()
        result = run_recgpt(model, args.dataset, config_dict={**shared, **per_model.get(model, {})})
        result["wall_seconds"] = time.time() - start
        result["git_revision"] = revision
        report["seed"] = result["config"]["seed"]
        report["results"][model] = result
        report_file.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(table(report))
        print(f"{model}: test {result['test_result']} in {result['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
