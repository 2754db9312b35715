"""Command lines of ``run_recgpt.py`` and ``run_hyper.py``."""

import argparse
import functools
import shlex
import sys

RUN_USAGE = """Train and evaluate RecGPT (or a RecBole baseline) on one dataset.

    python run_recgpt.py                                   # RecGPT on ml-100k (in the recbole wheel)
    python run_recgpt.py --dataset=amazon-beauty --data_path=../shared/datasets
    python run_recgpt.py --model=SASRec --dataset=amazon-beauty --data_path=../shared/datasets
    python run_recgpt.py --epochs=1 --finetune_epochs=1 --result_file=r.json

Any other --key=value overrides a RecBole / RecGPT parameter (see properties/).
"""

HYPER_USAGE = """Hyper-parameter search for RecGPT or any RecBole model; rerun the same command to resume.

    python run_hyper.py --dataset=amazon-beauty --data_path=../shared/datasets \\
        --params_file=properties/hyper/RecGPT.hyper --output_file=results/hyper-RecGPT.csv
    python run_hyper.py --tool=ray --cpus_per_trial=2 ...     # parallel trials, ASHA early stopping

The search space uses RecBole's format (name choice [a,b] / uniform lo,hi / loguniform lo,hi).
Every finished trial is written to the CSV at once; the same command skips them when rerun.
Beside it: <name>.txt (RecBole's text), <name>-ranked.md, <name>-best.yaml, <name>.png.
Any other --key=value is a fixed override for every trial.
"""


def _parser(usage):
    parser = argparse.ArgumentParser(description=usage, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="RecGPT", help="RecGPT or a RecBole model name (SASRec, BERT4Rec, ...)")
    parser.add_argument("--dataset", default="ml-100k", help="dataset name (a folder under --data_path)")
    parser.add_argument("--config_files", default="", help="space-separated yaml files, applied in order")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def _one_line_errors(main):
    """Print errors as one line on stderr and exit with status 2 (``--debug``: traceback)."""

    @functools.wraps(main)
    def wrapped(argv=None):
        argv = sys.argv[1:] if argv is None else argv
        if "--debug" in argv:
            return main(argv)
        from recbole_recgpt.errors import RecGPTError

        try:
            return main(argv)
        except RecGPTError as error:
            message = f"error: {error}"
        except KeyboardInterrupt:
            message = "interrupted; continue with --resume=<checkpoint_dir>/<run>-resume.pth"
        except Exception as error:  # anything unforeseen still gets one line, not a traceback
            message = f"error: {type(error).__name__}: {error} (rerun with --debug for the traceback)"
        print(message.replace("\n", " "), file=sys.stderr)
        sys.exit(2)

    return wrapped


def _parse(parser, argv):
    """Known options plus every other ``--key=value`` as a config override (strings; RecBole
    converts them as it does its own command line)."""
    args, rest = parser.parse_known_args(argv)
    rest = [arg for arg in rest if arg != "--debug"]
    overrides = {}
    for arg in rest:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key or not sep:
            parser.error(f"unrecognised argument {arg!r}; parameters are given as --key=value")
        overrides[key] = value
    if args.data_path is not None:
        overrides["data_path"] = args.data_path
    return args, overrides


@_one_line_errors
def run_main(argv=None):
    from recbole_recgpt.quick_start import run_recgpt

    parser = _parser(RUN_USAGE)
    parser.add_argument("--result_file", default=None, help="write the results as JSON here")
    parser.add_argument("--resume", default=None, help="continue a killed run from its *-resume.pth file")
    args, overrides = _parse(parser, argv)
    if args.resume and (overrides or args.config_files):
        parser.error("--resume continues a run with its own settings; give no other parameters")
    run_recgpt(
        model=args.model,
        dataset=args.dataset,
        config_files=args.config_files.split(),
        config_dict=overrides,
        result_file=args.result_file,
        resume=args.resume,
    )


@_one_line_errors
def hyper_main(argv=None):
    from recbole_recgpt.hyper import run_search

    parser = _parser(HYPER_USAGE)
    parser.add_argument("--params_file", default="properties/hyper/RecGPT.hyper", help="the search space")
    parser.add_argument("--output_file", default="hyper_result.csv", help="the CSV record; other outputs beside it")
    parser.add_argument("--tool", default="hyperopt", choices=["hyperopt", "ray"])
    parser.add_argument("--algo", default="exhaustive", choices=["exhaustive", "random", "bayes"],
                        help="exhaustive: every grid point; random; bayes (hyperopt's TPE; --tool=hyperopt only)")
    parser.add_argument("--max_evals", type=int, default=100, help="at most this many trials, earlier runs' included")
    parser.add_argument("--early_stop", type=int, default=10,
                        help="hyperopt: stop after this many trials without progress")
    parser.add_argument("--address", default=None, help="ray: HOST:PORT of a running Ray cluster (default: start one here)")
    parser.add_argument("--num_cpus", type=int, default=None, help="ray: CPUs of the local instance (default: the cores this process may use)")
    parser.add_argument("--cpus_per_trial", type=int, default=1, help="ray: CPUs and torch threads of each trial")
    parser.add_argument("--grace_period", type=int, default=10, help="ray: ASHA's first rung, in global epochs")
    parser.add_argument("--reduction_factor", type=float, default=2, help="ray: ASHA keeps the top 1/this at a rung")
    args, overrides = _parse(parser, argv)
    try:  # everything but the interrupted trial is in the record
        summary = run_search(
            model=args.model, dataset=args.dataset, params_file=args.params_file, output_file=args.output_file,
            tool=args.tool, algo=args.algo, max_evals=args.max_evals, early_stop=args.early_stop,
            config_files=args.config_files.split(), fixed=overrides, address=args.address, num_cpus=args.num_cpus,
            cpus_per_trial=args.cpus_per_trial, grace_period=args.grace_period, reduction_factor=args.reduction_factor,
            command=shlex.join(["python", "run_hyper.py", *(sys.argv[1:] if argv is None else argv)]),
        )
    except KeyboardInterrupt:
        print(f"interrupted; finished trials are in {args.output_file}: rerun the same command to go on", file=sys.stderr)
        sys.exit(2)
    return summary
