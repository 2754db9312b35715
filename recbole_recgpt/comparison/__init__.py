"""Side by side on one dataset: several models, several seeds each, one table.

    from recbole_recgpt.comparison import compare
    compare("mydata", ["SASRec", "GRU4Rec", "RecGPT"], seeds=[2020, 2021, 2022], out="comparison",
            data_path="dataset", overrides={"epochs": 20})

(``recbole-recgpt compare`` on the command line.) Every (model, seed) is one run through
``run_recgpt``, the same data, split, evaluator and training budget for every model, each
selected on validation; its record is ``<out>/runs/<dataset>/<model>/seed<seed>.json`` and
its checkpoints are in ``<out>/saved/<dataset>/<model>/seed<seed>/``. Called again, it keeps
every record made with the same settings and continues a killed run from its resume file, so
an interrupted comparison goes on where it stopped. Then ``<out>/comparison.csv``, ``.md``
and ``.png`` (:class:`~recbole_recgpt.comparison.table.Comparison`).
"""

from pathlib import Path

from recbole_recgpt.comparison.store import Run, claim
from recbole_recgpt.comparison.table import Comparison
from recbole_recgpt.checks import check_parameter_names
from recbole_recgpt.config import parameter_names
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.quick_start import check_run


def model_overrides(models, dataset, overrides):
    """``{model: its overrides}``: each parameter goes to every model that has it (a RecGPT
    parameter such as ``finetune_epochs`` is not SASRec's); a parameter no model has is an
    error, with a did-you-mean among every model's parameters."""
    known = {model: parameter_names(model, dataset) for model in models}
    check_parameter_names(overrides, set().union(*known.values()), "the command line")
    return {model: {key: value for key, value in overrides.items() if key in known[model]} for model in models}


def comparison_runs(dataset, models, seeds, out, data_path=None, overrides=None, config_files=()):
    """The :class:`Run` of every (model, seed), seeds outer, after every check that needs no
    data: the names, and each model's resolved config as ``run_recgpt`` checks it (so an
    unknown model, a missing dataset or a bad parameter stops here, before any training)."""
    models, seeds = list(models), list(seeds)
    if not models:
        raise ConfigError("no model to compare; name them as --models=SASRec,GRU4Rec,RecGPT")
    if not seeds:
        raise ConfigError("no seed to run; name them as --seeds=2020,2021,2022")
    for kind, names in (("model", models), ("seed", seeds)):
        twice = sorted({str(name) for name in names if names.count(name) > 1})
        if twice:
            raise ConfigError(f"{kind} {', '.join(twice)} is named twice; name each once")
    if not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
        raise ConfigError(f"seeds must be integers, not {', '.join(map(repr, seeds))}")
    shared = dict(overrides or {})
    if data_path is not None:
        shared["data_path"] = str(data_path)
    per_model = model_overrides(models, dataset, shared)
    for model in models:
        check_run(model, dataset, list(config_files), per_model[model])
    out = Path(out)
    return [
        Run(out / "runs", dataset, model, seed, model, config_files, per_model[model],
            checkpoint_dir=out / "saved" / dataset / model / f"seed{seed}")
        for seed in seeds for model in models
    ]


def state_of(run):
    """What :func:`compare` does with a run: ``kept``, ``resumes <file>`` or ``trains``."""
    if run.current():
        return "kept"
    resume = run.resume_file(run.config())
    return f"resumes {resume}" if resume else "trains"


def finish(run, command, log):
    """The run's record: the stored one when current, else trained now (under a claim, so two
    processes never train one run); None while another process trains it."""
    record = run.current()
    if record:
        log(f"{run.dataset} {run.name} seed {run.seed}: kept ({run.path})")
        return record
    with claim(run.path) as mine:
        if not mine:
            log(f"{run.dataset} {run.name} seed {run.seed}: another process is training it; left out of this table")
            return None
        record = run.train(command)
    metric = record.config["valid_metric"].lower()
    log(
        f"{run.dataset} {run.name} seed {run.seed}: {'resumed and ' if record.resumed else ''}trained, valid {metric} "
        f"{record.best_valid_result[metric]:.4f}, test {metric} {record.test_result[metric]:.4f}, epochs "
        f"{record.epochs}, {record.wall_s:.0f} s"
    )
    return record


def compare(dataset, models, seeds, out, data_path=None, overrides=None, config_files=(), command=None, log=print):
    """Train every (model, seed) the store ``out`` lacks, keep the rest, and write
    ``out/comparison.csv``, ``.md`` and ``.png``; returns the :class:`Comparison`.

    ``overrides`` (``{parameter: value}``) apply to every model that has the parameter;
    ``config_files`` to every model. ``command`` is the command line the records and the
    table name as the one that made them. ``log`` gets one line per run.
    """
    runs = comparison_runs(dataset, models, seeds, out, data_path, overrides, config_files)
    records = [finish(run, command, log) for run in runs]
    comparison = Comparison([record for record in records if record is not None])
    for path in comparison.write(out, command):
        log(f"wrote {path}")
    return comparison


__all__ = ["compare", "comparison_runs", "Comparison", "Run"]
