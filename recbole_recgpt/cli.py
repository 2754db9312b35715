"""Command lines of ``run_recgpt.py`` (the ``recbole-recgpt`` command) and ``run_hyper.py``."""

import argparse
import functools
import os
import shlex
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

RUN_USAGE = """Train and evaluate RecGPT (or a RecBole baseline) on one dataset.

    python run_recgpt.py                                   # RecGPT on ml-100k (in the recbole wheel)
    python run_recgpt.py --dataset=amazon-beauty            # a paper dataset, shipped in dataset/
    python run_recgpt.py --model=SASRec --dataset=amazon-beauty
    python run_recgpt.py --epochs=1 --finetune_epochs=1 --result_file=r.json
    python run_recgpt.py --nproc=2 ...                     # 2 processes (DDP; gloo on CPU, nccl on GPU)
    torchrun --nproc-per-node=2 run_recgpt.py ...          # the same, started by torchrun
    python run_recgpt.py recommend --help                  # top-K items from a saved checkpoint
    python run_recgpt.py hyper --help                      # hyper-parameter search (run_hyper.py)
    python run_recgpt.py compare --help                    # several models and seeds side by side

Several machines: --nproc=N --world_size=W --ip=<address of the first> --port=P --offset=K
on each (K: rank of its first process: 0, N, 2N, ...).

Any other --key=value overrides a RecBole / RecGPT parameter (see properties/).
`recbole-recgpt` (installed with the package) is the same command.
"""

RECOMMEND_USAGE = """Top-K items from a saved checkpoint, for users of its dataset or for histories of item ids.

    python run_recgpt.py recommend --checkpoint=saved/RecGPT-ml-100k-<time>-finetune.pth --users=196,186
    python run_recgpt.py recommend --checkpoint=... --history="242 302 377" --history="51 86" --format=json
    python run_recgpt.py recommend --checkpoint=... --history_file=histories.txt --k=20 --output=recs.csv

A history file holds one history per line: item ids separated by spaces, oldest first.
Histories are numbered from 1 in the order given (--history first, then the file's lines).
Items are ranked as in evaluation (RecGPT: prompts, then two-stage recall); items already in
the history are not removed. A user's history is all of their interactions in the dataset.
"""

HYPER_USAGE = """Hyper-parameter search for RecGPT or any RecBole model; rerun the same command to resume.

    python run_hyper.py --dataset=amazon-beauty \\
        --params_file=properties/hyper/RecGPT.hyper --output_file=results/hyper-RecGPT.csv
    python run_hyper.py --tool=ray --cpus_per_trial=2 ...     # parallel trials, ASHA early stopping
    recbole-recgpt hyper ...                                  # the same, installed

The search space uses RecBole's format (name choice [a,b] / uniform lo,hi / loguniform lo,hi).
Every finished trial is written to the CSV at once; the same command skips them when rerun.
Beside it: <name>.txt (RecBole's text), <name>-ranked.md, <name>-best.yaml, <name>.png.
Any other --key=value is a fixed override for every trial.
"""


COMPARE_USAGE = """Several models on one dataset, several seeds each, side by side in one table.

    recbole-recgpt compare --dataset=mydata --data_path=dataset --models=SASRec,GRU4Rec,RecGPT \\
        --seeds=2020,2021,2022 --out=comparison
    recbole-recgpt compare ... --epochs=20      # any parameter, for every model that has it
    recbole-recgpt compare ... --check          # which runs it would train, resume or keep

Every (model, seed) is one run, as `recbole-recgpt --model=...` makes it (the same data, split,
evaluator and budget; selected on validation), recorded in <out>/runs/<dataset>/<model>/seed<seed>.json,
its checkpoints in <out>/saved/. Rerun the same command to go on: finished runs are kept while their
settings are the command's, a killed run resumes from its last epoch. Then <out>/comparison.csv,
.md and .png: per model, mean ± std over seeds of the best-valid and test metrics, the model best
on validation marked.
"""


def _parser(usage):
    parser = argparse.ArgumentParser(description=usage, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="RecGPT", help="RecGPT or a RecBole model name (SASRec, BERT4Rec, ...)")
    parser.add_argument("--dataset", default="ml-100k", help="dataset name (a folder under --data_path)")
    parser.add_argument("--config_files", default="", help="space-separated yaml files, applied in order")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def one_line_errors(main):
    """Print errors as one line on stderr and exit with status 2 (``--debug``: traceback); a
    stopped run's line ends with the command that finishes it (its ``next_step``)."""

    @functools.wraps(main)
    def wrapped(argv=None):
        argv = sys.argv[1:] if argv is None else argv
        if "--debug" in argv:
            return main(argv)
        from recbole_recgpt.errors import one_line

        try:
            return main(argv)
        except KeyboardInterrupt as stopped:
            message = "; ".join(filter(None, ["interrupted", getattr(stopped, "next_step", None)]))
        except Exception as error:  # anything unforeseen still gets one line, not a traceback
            message = "; ".join(filter(None, [f"error: {one_line(error)}", getattr(error, "next_step", None)]))
        if _process_rank():
            message = f"process {_process_rank()}: {message}"  # under torchrun, every process reports
        print(message.replace("\n", " "), file=sys.stderr)
        sys.exit(2)

    return wrapped


def _process_rank():
    """This process's rank when torchrun started it (0 otherwise)."""
    return int(os.environ.get("RANK") or 0)


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


def main(argv=None):
    """``run_recgpt.py [recommend | hyper] ...`` (the ``recbole-recgpt`` command): train and
    evaluate, recommend from a checkpoint, or search hyper-parameters (as ``run_hyper.py``)."""
    argv = sys.argv[1:] if argv is None else argv
    # Nothing is returned: the console script exits with main's return value (None: status 0).
    if argv[:1] == ["recommend"]:
        recommend_main(argv[1:])
    elif argv[:1] == ["hyper"]:
        hyper_main(argv[1:])
    elif argv[:1] == ["compare"]:
        compare_main(argv[1:])
    else:
        run_main(argv)


def parse_run(argv):
    """``(args, overrides)`` of a ``run_recgpt.py`` command line (argparse's errors exit)."""
    parser = _parser(RUN_USAGE)
    parser.add_argument("--result_file", default=None,
                        help="write the results as JSON here (with --resume: the resumed command's, unless given)")
    parser.add_argument("--resume", default=None, help="continue a killed run from its *-resume.pth file")
    parser.add_argument("--check", action="store_true",
                        help="resolve and validate the configuration, print it and stop (no data loaded, nothing trained)")
    args, overrides = _parse(parser, argv)
    from recbole_recgpt.distributed import LAUNCH_KEYS

    if args.resume and (set(overrides) - set(LAUNCH_KEYS) or args.config_files):
        parser.error(
            f"--resume continues a run with its own settings; give no other parameters (but where it runs: "
            f"{', '.join('--' + key for key in LAUNCH_KEYS)}, and --result_file)"
        )
    return args, overrides


@one_line_errors
def run_main(argv=None):
    from recbole_recgpt.errors import ProcessKilled
    from recbole_recgpt.quick_start import check_run, run_recgpt

    args, overrides = parse_run(argv)
    if args.check:
        config = check_run(args.model, args.dataset, args.config_files.split(), overrides, resume=args.resume)
        print(describe_config(config))
        return
    try:
        with sigterm_interrupts():
            run_recgpt(
                model=args.model,
                dataset=args.dataset,
                config_files=args.config_files.split(),
                config_dict=overrides,
                result_file=args.result_file,
                resume=args.resume,
            )
    except (KeyboardInterrupt, ProcessKilled) as stopped:
        stopped.next_step = next_step(stopped, argv, resumed=bool(args.resume))
        raise


@contextmanager
def sigterm_interrupts():
    """Within, SIGTERM (a scheduler's or ``kill``'s stop) stops the run as Ctrl-C does: the
    run saves nothing half-written, a launcher stops its processes, and the user is told how
    to continue."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def next_step(stopped, argv, resumed=False):
    """What finishes a run stopped from outside, as a command to copy: ``--resume`` from the
    resume state it saved, where it ran (the launcher's ``--nproc``, ``--offset``; torchrun's
    form), which also writes the outputs it was asked for; or, stopped before it saved one,
    the command it was started with (``argv``: its arguments) again."""
    from recbole_recgpt.quick_start import seen_from_here

    resume_file = getattr(stopped, "resume_file", None)
    if resume_file is None:
        # A resumed run stopped this early left the resume file it was given as it was.
        again = "continue with" if resumed else "nothing to resume from yet; start again with"
        return f"{again}: {shlex.join([*_entry(), *argv])}"
    words = [*_entry(), f"--resume={seen_from_here(resume_file)}"]
    if getattr(stopped, "nproc", None) is not None:
        words.append(f"--nproc={stopped.nproc}")
    if getattr(stopped, "offset", 0):
        words.append(f"--offset={stopped.offset}")
    return f"continue with: {shlex.join(words)}"


def _entry():
    """The words that started this program, as the user would type them: ``python
    run_recgpt.py``, ``recbole-recgpt`` (the installed command), ``python -m
    recbole_recgpt.cli``, or, in a process torchrun started, torchrun's (``--nproc-per-node``; on several machines their count, this one's
    rank and process 0's address)."""
    from recbole_recgpt.distributed import launched_env

    script = sys.argv[0]
    env = launched_env()
    if env is not None:
        words = ["torchrun", f"--nproc-per-node={env['local_world_size']}"]
        if env["world_size"] > env["local_world_size"]:
            words += [f"--nnodes={env['world_size'] // env['local_world_size']}",
                      f"--node-rank={(env['rank'] - env['local_rank']) // env['local_world_size']}",
                      f"--master-addr={env['ip']}", f"--master-port={env['port']}"]
        return [*words, script]
    if os.path.abspath(script) == os.path.abspath(__file__):  # python -m recbole_recgpt.cli
        return [_as_typed(sys.executable), "-m", "recbole_recgpt.cli"]
    if script.endswith(".py"):
        return [_as_typed(sys.executable), script]
    return [_as_typed(script)]


def _as_typed(path):
    """An executable by its name where the shell finds this very one by it, else its path."""
    name = os.path.basename(path)
    found = shutil.which(name)
    return name if found and os.path.abspath(found) == os.path.abspath(path) else path


def recommend_parser():
    from recbole_recgpt.recommend import FORMATS

    parser = argparse.ArgumentParser(
        prog="run_recgpt.py recommend", description=RECOMMEND_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="a saved model (*-finetune.pth, *-pretrain.pth, *-train.pth)")
    parser.add_argument("--users", default="", help="comma-separated user ids of the checkpoint's dataset")
    parser.add_argument("--history", action="append", default=[], help="item ids separated by spaces, oldest first (repeatable)")
    parser.add_argument("--history_file", default=None, help="one history per line")
    parser.add_argument("--k", type=int, default=10, help="items per user or history")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/, if not where the run read it")
    parser.add_argument("--output", default=None, help="write to this file instead of stdout")
    parser.add_argument("--format", choices=FORMATS, default=None, help="default: json for an --output ending .json, else csv")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


@one_line_errors
def recommend_main(argv=None):
    from recbole_recgpt.files import write_text_atomically
    from recbole_recgpt.recommend import format_recommendations, recommend

    args = recommend_parser().parse_args(argv)
    histories = [history.split() for history in args.history]
    if args.history_file:
        histories += read_history_file(args.history_file)
    users = [user.strip() for user in args.users.split(",") if user.strip()]
    rows = recommend(args.checkpoint, users=users, histories=histories, k=args.k, data_path=args.data_path)
    fmt = args.format or ("json" if args.output and args.output.endswith(".json") else "csv")
    text = format_recommendations(rows, fmt)
    if args.output:
        write_text_atomically(args.output, text)
    else:
        sys.stdout.write(text)


def read_history_file(path):
    """One history per line, item ids separated by whitespace."""
    from recbole_recgpt.errors import DataError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"history file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"history file {path} cannot be read ({error})") from None
    return [line.split() for line in lines]


def describe_config(config):
    """The resolved settings of a checked run as YAML, under one line that names the run."""
    import yaml

    from recbole_recgpt.quick_start import jsonable_config, trainer_class

    return (
        f"# valid: {config['model']} on {config['dataset']} with {trainer_class(config).__name__}; "
        "no data loaded, nothing trained. Resolved settings:\n"
        + yaml.safe_dump(jsonable_config(config), sort_keys=True, default_flow_style=None, width=120)
    )


def parse_hyper(argv):
    """``(args, overrides)`` of a ``run_hyper.py`` command line (argparse's errors exit)."""
    parser = _parser(HYPER_USAGE)
    parser.add_argument("--params_file", default=None,
                        help="the search space (default: the project's properties/hyper/<model>.hyper)")
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
    parser.add_argument("--check", action="store_true",
                        help="validate the search space and the shared configuration, print them and stop (no trial runs)")
    return _parse(parser, argv)


@one_line_errors
def hyper_main(argv=None):
    from recbole_recgpt.hyper import check_search, run_search

    args, overrides = parse_hyper(argv)
    if args.check:
        config, space = check_search(
            model=args.model, dataset=args.dataset, params_file=args.params_file, tool=args.tool, algo=args.algo,
            max_evals=args.max_evals, early_stop=args.early_stop, config_files=args.config_files.split(),
            fixed=overrides, cpus_per_trial=args.cpus_per_trial, grace_period=args.grace_period,
            reduction_factor=args.reduction_factor,
        )
        print("\n".join(f"# search space: {parameter.name} {parameter.kind} {parameter.values}" for parameter in space))
        print(describe_config(config))
        return
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
    if summary.unfinished:
        sys.exit(f"error: {summary.unfinished} trial(s) of the search did not finish; rerun the same command to "
                 f"run them (the best yaml, {summary.paths['best']}, is written when every trial has)")
    if summary.best is None and summary.rows:
        # A search with no result must not read as a success to whatever runs it (a queue).
        sys.exit(f"error: no trial of the search completed; the reasons are in {summary.paths['ranked']}")
    return summary


def compare_parser():
    parser = argparse.ArgumentParser(
        prog="recbole-recgpt compare", description=COMPARE_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-100k", help="dataset name (a folder under --data_path)")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--models", default="SASRec,GRU4Rec,RecGPT", help="comma-separated: RecGPT and RecBole models")
    parser.add_argument("--seeds", default="2020", help="comma-separated integers")
    parser.add_argument("--out", default="comparison", help="folder of the records (runs/), checkpoints (saved/) and tables")
    parser.add_argument("--config_files", default="", help="space-separated yaml files, for every model")
    parser.add_argument("--check", action="store_true",
                        help="validate every model's configuration and say which runs would be trained, resumed or kept")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def parse_compare(argv):
    """``(args, models, seeds, overrides)`` of a ``compare`` command line."""
    from recbole_recgpt.errors import ConfigError

    args, overrides = _parse(compare_parser(), argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    words = [word.strip() for word in args.seeds.split(",") if word.strip()]
    try:
        seeds = [int(word) for word in words]
    except ValueError:
        raise ConfigError(f"--seeds={args.seeds!r}: seeds are integers separated by commas, e.g. --seeds=2020,2021") from None
    return args, models, seeds, overrides


@one_line_errors
def compare_main(argv=None):
    from recbole_recgpt.comparison import compare, comparison_runs, state_of

    argv = sys.argv[1:] if argv is None else argv
    args, models, seeds, overrides = parse_compare(argv)
    config_files = args.config_files.split()
    if args.check:
        for run in comparison_runs(args.dataset, models, seeds, args.out, overrides=overrides, config_files=config_files):
            print(f"{run.dataset} {run.name} seed {run.seed}: {state_of(run)} ({run.path})")
        return
    command = shlex.join([*_entry(), "compare", *argv])
    try:
        compare(args.dataset, models, seeds, args.out, overrides=overrides, config_files=config_files,
                command=command, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt as stopped:
        stopped.next_step = f"finished runs are kept and the stopped one resumes: continue with: {command}"
        raise


if __name__ == "__main__":  # python -m recbole_recgpt.cli
    main()
