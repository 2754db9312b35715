"""Hyper-parameter search for RecGPT and any RecBole model, resumable, with two tools.

``run_search`` is what ``run_hyper.py`` calls:

* ``tool="hyperopt"``: RecBole's ``HyperTuning`` (``algo`` exhaustive, random or bayes), one
  trial after another in this process (:mod:`.hyperopt_search`).
* ``tool="ray"``: Ray Tune, trials in parallel on a local Ray instance or a cluster, with ASHA
  stopping losing trials early (:mod:`.ray_search`; algo exhaustive or random).

Each trial is a normal run (:mod:`.trial`); each one that ends is written at once to the
CSV record, which a rerun of the same command reads to skip the finished trials
(:mod:`.output`, which also writes the text, ranked, yaml and PNG outputs).
"""

import subprocess
from collections import ChainMap
from dataclasses import dataclass
from pathlib import Path
from time import time

from recbole.utils import get_local_time

from recbole_recgpt.checks import check_dataset_files
from recbole_recgpt.config import create_config, properties_dir
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.hyper.output import SearchRecord, output_paths, write_outputs
from recbole_recgpt.hyper.space import grid, params_text, read_space, sample
from recbole_recgpt.hyper.trial import SearchSettings, run_trial
from recbole_recgpt.quick_start import trainer_class

TOOLS = ("hyperopt", "ray")
ALGOS = {"hyperopt": ("exhaustive", "random", "bayes"), "ray": ("exhaustive", "random")}
PATH_PARAMETERS = ("data_path", "checkpoint_dir")  # made absolute: Ray trials run in their own folders


@dataclass
class SearchSummary:
    """``rows``: every recorded trial; ``added``: those this run recorded; ``best``: the best
    completed trial on validation (None if none completed); ``paths``: the output files;
    ``unfinished``: the planned trials that have no result yet (the best yaml waits for them)."""

    rows: list
    added: list
    best: dict
    paths: dict
    unfinished: int = 0


def run_search(model="RecGPT", dataset="ml-100k", params_file=None,
               output_file="hyper_result.csv", tool="hyperopt", algo="exhaustive", max_evals=100, early_stop=10,
               config_files=(), fixed=None, address=None, num_cpus=None, cpus_per_trial=1, grace_period=10,
               reduction_factor=2, command=None):
    """Search ``params_file``'s space for ``model`` on ``dataset``; return a :class:`SearchSummary`.

    ``fixed`` holds ``--key=value`` overrides shared by every trial; ``config_files`` are
    yaml files applied before them. ``max_evals`` caps the number of trials (counting the
    finished ones of earlier runs); ``early_stop`` is hyperopt's patience in trials. Ray:
    ``address`` of an existing cluster, else a local instance of ``num_cpus`` CPUs (default:
    this process's cores); ``cpus_per_trial`` CPUs and torch threads per trial; ASHA's
    ``grace_period`` (global epochs) and ``reduction_factor``.
    """
    started = time()
    fixed = {key: str(Path(value).resolve()) if key in PATH_PARAMETERS else value
             for key, value in (fixed or {}).items()}
    config_files = [str(Path(path).resolve()) for path in config_files]
    config, space = check_search(model, dataset, params_file, tool, algo, max_evals, early_stop, config_files, fixed,
                                 cpus_per_trial, grace_period, reduction_factor)
    points = grid(space) if algo == "exhaustive" else None
    bigger, seed = config["valid_metric_bigger"], config["seed"]
    # Ray runs each trial in a folder of its own, where a relative data folder (the default
    # dataset/) does not exist: every trial gets the one this process found, absolute.
    data_folder = str(Path(config["data_path"]).resolve().parent)
    settings = SearchSettings(model=config["model"], dataset=dataset, config_files=config_files,
                              fixed={**fixed, "data_path": data_folder})
    paths = output_paths(output_file)
    context = {
        "command": command or f"run_search(model={model!r}, dataset={dataset!r}, params_file={params_file!r}, ...)",
        "git_revision": _git_revision(), "seed": seed, "model": settings.model, "dataset": dataset,
        "valid_metric": config["valid_metric"], "bigger": bigger, "fixed": fixed, "config_files": config_files,
        "started": started,
    }

    def recorded(row):  # as each trial ends: one line, and the outputs brought up to date
        context["n_trials"] = len(record.rows)
        print(_one_line(row, config["valid_metric"]), flush=True)
        write_outputs(record, paths, context, complete=False)

    record = SearchRecord(paths["csv"], [parameter.name for parameter in space], on_add=recorded)
    if record.rows:
        print(f"{paths['csv']}: {len(record.rows)} trial(s) recorded by earlier runs; finished ones are skipped")

    unfinished = 0  # hyperopt's loop ends when its search does (an interrupt raises)
    if tool == "hyperopt":
        from recbole_recgpt.hyper.hyperopt_search import ResumableHyperTuning

        def one_trial(params):
            print(f"running {params_text(params)}", flush=True)
            return run_trial(params, settings)

        ResumableHyperTuning(space, record, one_trial, bigger, algo, max_evals, early_stop, seed).run()
    else:
        from recbole_recgpt.hyper.ray_search import run_ray_search

        trials = points[:max_evals] if points is not None else sample(space, max_evals, seed)
        pending = [params for params in trials if record.finished(params) is None]
        print(f"{len(trials) - len(pending)} of {len(trials)} trial(s) already finished; running {len(pending)} with Ray")
        run_ray_search(
            pending, settings, record, bigger, max_t=max((_epoch_budget(config, params) for params in trials), default=0) + 1,
            storage_path=paths["ray"], name=f"search-{get_local_time()}", address=address, num_cpus=num_cpus,
            cpus_per_trial=cpus_per_trial, grace_period=grace_period, reduction_factor=reduction_factor,
        )
        unfinished = sum(record.finished(params) is None for params in pending)
        if unfinished:
            print(f"{unfinished} trial(s) did not finish (interrupted, or an error); rerun the same command to run them")

    context["n_trials"] = len(record.rows)
    best = write_outputs(record, paths, context, plot=bool(record.rows), complete=not unfinished)
    _print_summary(best, paths)
    return SearchSummary(rows=record.rows, added=record.added, best=best, paths=paths, unfinished=unfinished)


def check_search(model="RecGPT", dataset="ml-100k", params_file=None, tool="hyperopt",
                 algo="exhaustive", max_evals=100, early_stop=10, config_files=(), fixed=None, cpus_per_trial=1,
                 grace_period=10, reduction_factor=2):
    """``(shared config, search space)`` of a search, every check that needs no trial done:
    the options, the space (an exhaustive search refuses ranges), the dataset's file and the
    fixed settings. ``run_hyper.py --check`` prints them."""
    _check_options(tool, algo, max_evals, early_stop, cpus_per_trial, grace_period, reduction_factor)
    space = read_space(params_file or default_space(model))
    if algo == "exhaustive":
        grid(space)
    return _check_before_searching(model, dataset, config_files, fixed or {}), space


def default_space(model):
    """The project's search space for ``model`` (``properties/hyper/<model>.hyper``)."""
    path = properties_dir() / "hyper" / f"{model}.hyper"
    if not path.is_file():
        raise ConfigError(f"there is no default search space for {model}; write one and pass --params_file=FILE")
    return str(path)


def _check_options(tool, algo, max_evals, early_stop, cpus_per_trial, grace_period, reduction_factor):
    if tool not in TOOLS:
        raise ConfigError(f"tool={tool!r} is unknown; use one of {', '.join(TOOLS)}")
    if algo not in ALGOS[tool]:
        raise ConfigError(f"algo={algo!r} does not work with tool={tool}; use one of {', '.join(ALGOS[tool])}")
    for name, value, least in (("max_evals", max_evals, 0), ("early_stop", early_stop, 1),
                               ("cpus_per_trial", cpus_per_trial, 1), ("grace_period", grace_period, 1)):
        if value < least:
            raise ConfigError(f"{name}={value} must be at least {least}")
    if reduction_factor <= 1:
        raise ConfigError(f"reduction_factor={reduction_factor} must be above 1 (ASHA keeps the top 1/reduction_factor)")


def _check_before_searching(model, dataset, config_files, fixed):
    """The shared config, checked once: a missing dataset or a bad fixed setting stops the
    search before any trial (a trial's own bad combination only fails that trial)."""
    config = create_config(model, dataset, config_files, fixed)
    check_dataset_files(config)
    return config


def _epoch_budget(config, params):
    """Most epochs a trial can train, all phases together (ASHA's ``max_t`` minus one): its
    trainer's answer for the trial's settings."""
    return trainer_class(config).epoch_budget(ChainMap(params, config))


def _print_summary(best, paths):
    if best is None:
        print(f"no trial completed; see {paths['ranked']}")
    else:
        print("best params:", best["params"])
        print("best valid result:", best["valid"])
        print("test result:", best["test"])
    # The text and the ranked table are always written; the best yaml and the chart only when there is one.
    print("outputs:", ", ".join(str(path) for key, path in paths.items() if key != "ray" and Path(path).exists()))


def _one_line(row, valid_metric):
    metric = valid_metric.lower()
    if row["best_valid_score"] is not None:
        test = f", test {metric} {row['test'][metric]:.4f}" if metric in row["test"] else ""
        outcome = f"valid {metric} {row['best_valid_score']:.4f}{test}, {row['epochs']} epochs"
    else:
        outcome = row["error"]
    return f"trial {row['trial']} {row['status']}: {params_text(row['params'])}: {outcome} ({row['seconds']:.0f} s)"


def _git_revision():
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip() or "unknown"


__all__ = ["check_search", "run_search", "SearchSummary"]
