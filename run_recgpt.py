"""Train and evaluate RecGPT (or a RecBole baseline) on one dataset.

    python run_recgpt.py                                   # RecGPT on ml-100k (in the recbole wheel)
    python run_recgpt.py --dataset=amazon-beauty --data_path=../shared/datasets
    python run_recgpt.py --model=SASRec --dataset=amazon-beauty --data_path=../shared/datasets
    python run_recgpt.py --epochs=1 --finetune_epochs=1 --result_file=r.json

Any other ``--key=value`` overrides a RecBole / RecGPT parameter.
"""

import argparse

from recbole_recgpt.quick_start import run_recgpt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="RecGPT", help="RecGPT or a RecBole model name (SASRec, BERT4Rec, ...)")
    parser.add_argument("--dataset", default="ml-100k", help="dataset name (a folder under --data_path)")
    parser.add_argument("--config_files", default="", help="space-separated yaml files, applied in order")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--result_file", default=None, help="write the results as JSON here")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for arg in rest:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key or not sep:
            parser.error(f"unrecognised argument {arg!r}; overrides are written --key=value")
        overrides[key] = value
    if args.data_path is not None:
        overrides["data_path"] = args.data_path
    return args, overrides


def main(argv=None):
    args, overrides = parse_args(argv)
    run_recgpt(
        model=args.model,
        dataset=args.dataset,
        config_files=args.config_files.split(),
        config_dict=overrides,
        result_file=args.result_file,
    )


if __name__ == "__main__":
    main()
