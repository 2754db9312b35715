"""Run any model (RecGPT or a RecBole built-in) through the same data, split and evaluator."""

import logging
import os
from logging import getLogger

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import ModelType, init_logger, init_seed

from recbole_recgpt import distributed
from recbole_recgpt.checks import (
    check_catalogue, check_dataset_files, check_pretrained_checkpoint, check_split, inter_columns, read_config_file,
)
from recbole_recgpt.checkpoints import load_weights, read_checkpoint
from recbole_recgpt.config import complete_load_col, create_config, for_this_process
from recbole_recgpt.errors import ConfigError, Interrupted
from recbole_recgpt.protocol import EvaluationProtocol
from recbole_recgpt.record import RunRecord, hit_ranks
from recbole_recgpt.utils import get_model, trainer_class


def build(config):
    """Dataset, loaders, model and trainer for a config, seeded as RecBole does.

    In a run of several processes, RecBole's training loader gives each process its share;
    the evaluation loaders hold every user in every process (the trainer scores a share of
    their batches in each and gathers the results), and each process after the first
    reseeds, so that their negatives and dropout differ. With ``eval_mask_history`` the
    evaluation loaders also give the evaluator each user's history items to mask.
    """
    assumed = complete_load_col(config, inter_columns(config)[1])
    if assumed:
        getLogger().info(assumed)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    check_catalogue(config, dataset)
    check_split(config, dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    protocol = EvaluationProtocol.from_config(config)
    if protocol.mask_history or not config["single_spec"]:
        with distributed.as_one_process(config):
            valid_data, test_data = (
                protocol.evaluation_loader_class(config, phase)(config, loader.dataset, loader._sampler, shuffle=False)
                for phase, loader in (("valid", valid_data), ("test", test_data))
            )
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
    if distributed.rank() > 0:
        init_seed(config["seed"] + distributed.rank(), config["reproducibility"])
    trainer = trainer_class(config)(config, model)
    return dataset, (train_data, valid_data, test_data), model, trainer


def check_before_loading(config, resumed=False, last_phase=None):
    """Every check that needs no data, so that bad input stops with its one-line error before
    RecBole loads (and logs) anything."""
    check_dataset_files(config)
    if distributed.several_processes(config) and config["MODEL_TYPE"] == ModelType.TRADITIONAL:
        raise ConfigError(
            f"{config['model']} counts or solves rather than learning step by step, so its processes would each see "
            "a share of the data only; run it in one process"
        )
    if config["pretrained_checkpoint"] and not resumed:  # a resumed run has it loaded already
        check_pretrained_checkpoint(config["pretrained_checkpoint"], config)
    trainer = trainer_class(config)  # its settings were checked with the config's (create_config)
    if last_phase is not None and last_phase not in trainer.phase_order:
        raise ConfigError(
            f"last_phase={last_phase!r} is not a phase of {config['model']}'s trainer; "
            f"use one of {', '.join(trainer.phase_order)}"
        )


def run_recgpt(
    model="RecGPT", dataset="ml-100k", config_files=None, config_dict=None, saved=True, result_file=None, resume=None,
    epoch_callback=None, last_phase=None,
):
    """Train, validate and test one model; return its :class:`~recbole_recgpt.record.RunRecord`
    (and write it, as JSON, to ``result_file``).

    The record holds ``best_valid_result`` and ``test_result`` (RecBole's metric keys, e.g.
    ``ndcg@10``), the test users' hit ranks, per-phase ``epochs`` and seconds, the number of
    processes that trained (``world_size``) and the resolved config. ``resume`` is the ``*-resume.pth`` file of a
    killed run, which then continues with its own settings (``config_dict`` may then hold
    only the keys of where it runs: ``nproc``, ``world_size``, ``ip``, ``port``, ``offset``)
    and writes the ``result_file`` the killed run was asked for, unless given another.
    Stopped by Ctrl-C (or SIGTERM, where the caller makes it one), the run raises
    :class:`~recbole_recgpt.errors.Interrupted` naming the resume file it saved.

    RecBole's ``nproc`` (processes on this machine) and ``world_size`` (on all machines) above
    one make this call start the processes (:func:`recbole_recgpt.distributed.launch`),
    each of which runs this function; it then returns the first process's record. Under
    ``torchrun`` each process calls it directly. Only process 0 writes files.
    ``epoch_callback(epoch_idx, valid_score)`` is called after every validation of every
    phase (``epoch_idx`` counts from 0 in each phase); tuning reports progress through it.
    ``last_phase`` (a phase of the trainer, e.g. ``pretrain``) ends training after that phase,
    with no test evaluation (``test_result`` None); the run's resume file continues it later.
    """
    state, config = resolve_run(model, dataset, config_files, config_dict, resume, last_phase)
    if state and result_file is None:  # resume files from before outputs were kept have none
        result_file = (state.get("outputs") or {}).get("result_file")
    # Absolute, as the resume state keeps it: a run resumed from any folder writes this file.
    result_file = os.path.abspath(result_file) if result_file else None
    kwargs = dict(model=model, dataset=dataset, config_files=config_files, config_dict=config_dict, saved=saved,
                  result_file=result_file, resume=resume, last_phase=last_phase)
    if distributed.needs_launch(config):
        return distributed.launch(config, run_recgpt, kwargs)
    if state and state.get("world_size", 1) != distributed.world_size():
        raise ConfigError(
            f"resume file {resume} is of a run in {state.get('world_size', 1)} process(es); resume it in as many "
            f"(--nproc / torchrun), not {distributed.world_size()}"
        )
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    _, (train_data, valid_data, test_data), model, trainer = build(config)
    logger.info(model)
    if state:
        trainer.resume_from(state)
    trainer.last_phase = last_phase
    trainer.outputs = {"result_file": result_file}
    try:
        return train_and_test(config, trainer, (train_data, valid_data, test_data), saved, result_file, epoch_callback)
    except KeyboardInterrupt:
        raise Interrupted("interrupted", trainer.saved_resume_file)  # chained: --debug shows where


def train_and_test(config, trainer, loaders, saved, result_file, epoch_callback):
    """:func:`run_recgpt` from a built trainer on: train, test, write and return the record."""
    logger = getLogger()
    train_data, valid_data, test_data = loaders
    # The best score is the record's best_valid_score, read off best_valid_result.
    _, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=epoch_callback
    )
    test_result = None
    if trainer.last_phase is None:
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(f"best valid: {best_valid_result}")
    logger.info(f"test result: {test_result}")

    record = run_record(
        config, trainer, best_valid_result, test_result, phases=trainer.phases,
        checkpoint=trainer.saved_model_file if saved else None,
    )
    if result_file and distributed.is_main():
        record.write(result_file)
    distributed.finish()
    return record


def resolve_run(model="RecGPT", dataset="ml-100k", config_files=None, config_dict=None, resume=None, last_phase=None):
    """``(resume state or None, config)`` of a run, with every check that needs no data done."""
    state = load_resume_state(resume) if resume else None
    config = resumed_config(state, config_dict) if state else create_config(model, dataset, config_files, config_dict)
    check_before_loading(config, resumed=state is not None, last_phase=last_phase)
    return state, config


def check_run(model="RecGPT", dataset="ml-100k", config_files=None, config_dict=None, resume=None):
    """The resolved config of a run, validated as :func:`run_recgpt` validates it before it
    loads anything; nothing is loaded or trained (``run_recgpt.py --check``)."""
    return resolve_run(model, dataset, config_files, config_dict, resume)[1]


def parameter_counts(model):
    """``{"trainable": n, "frozen": m}``: the model's parameters that training updates, and
    those it keeps fixed (RecGPT's frozen prompt writer, a copy of the phase-1 network)."""
    counts = {"trainable": 0, "frozen": 0}
    for parameter in model.parameters():
        counts["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
    return counts


def run_record(config, trainer, best_valid_result, test_result, **fields):
    """The :class:`~recbole_recgpt.record.RunRecord` of a run evaluated by ``trainer`` with
    ``config``: what ran, its metrics, the test users' hit ranks (from the last evaluation,
    the test, so none is run again), its parameters and where it ran; ``fields`` add the rest
    (phases, checkpoint)."""
    per_user = trainer.eval_collector.per_user_rows() if test_result is not None else None
    return RunRecord(
        dataset=config["dataset"],
        model=config["model"],
        seed=config["seed"],
        trainer=type(trainer).display_name,
        best_valid_result=plain_metrics(best_valid_result),
        test_result=plain_metrics(test_result),
        world_size=distributed.world_size(),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        parameters=parameter_counts(trainer.model),
        config=jsonable_config(config),
        test_hit_ranks=hit_ranks(*per_user) if per_user else None,
        **fields,
    )


def objective_function(config_dict=None, config_file_list=None, saved=False, model=None, dataset=None, base_config=None):
    """RecBole ``HyperTuning`` objective that also finds plugin models.

    ``HyperTuning`` calls it with the sampled parameters and its fixed config files. The
    model and dataset are the ``model`` / ``dataset`` keys of those (as in RecBole), else
    the keyword arguments (bind them with ``functools.partial``); ``base_config`` holds
    fixed overrides such as ``data_path``.
    """
    settings = {}
    for path in config_file_list or []:
        settings.update(read_config_file(path))
    settings.update(config_dict or {})
    logging.getLogger().setLevel(logging.ERROR)
    record = run_recgpt(
        model=settings.get("model", model or "RecGPT"),
        dataset=settings.get("dataset", dataset or "ml-100k"),
        config_files=config_file_list,
        config_dict={**(base_config or {}), **(config_dict or {})},
        saved=saved,
    )
    return {
        "model": record.model,
        "best_valid_score": record.best_valid_score,
        "valid_score_bigger": record.config["valid_metric_bigger"],
        "best_valid_result": record.best_valid_result,
        "test_result": record.test_result,
    }


def load_data_and_model(model_file):
    """RecBole's ``load_data_and_model`` for plugin models: config, model (weights loaded),
    dataset and the three loaders, rebuilt from a checkpoint."""
    checkpoint = read_checkpoint(model_file, "model")
    config = for_this_process(checkpoint["config"])
    check_dataset_files(config)
    init_logger(config)
    dataset, loaders, model, _ = build(config)
    load_weights(model, checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return (config, model, dataset, *loaders)


def load_resume_state(path):
    """The resume state a run saves after every epoch (``<checkpoint>-resume.pth``)."""
    return relocate(read_checkpoint(path, "resume"))


# The paths of a resume state's config: what the run read and where it wrote.
STATE_PATH_KEYS = ("data_path", "checkpoint_dir", "pretrained_checkpoint")


def relocate(state):
    """A resume state with its relative paths (checkpoints, :data:`STATE_PATH_KEYS`) relative
    to this folder, so that a run resumed from any folder reads and writes where the one it
    continues did. A state keeps them as given, with the folder they are relative to
    (``folder``); one saved before it did, or in this folder, is left as it is."""
    folder = state.get("folder")
    if folder is None or os.path.realpath(folder) == os.path.realpath(os.curdir):
        return state

    def moved(path):
        return seen_from_here(os.path.join(folder, path))

    state["checkpoint_stem"] = moved(state["checkpoint_stem"])
    for record in state["phases"].values():
        if record.get("checkpoint"):
            record["checkpoint"] = moved(record["checkpoint"])
    for key in STATE_PATH_KEYS:
        if state["config"][key]:
            state["config"][key] = moved(state["config"][key])
    return state


def seen_from_here(path):
    """A path relative to this folder where it lies inside it (as given: shorter), else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


def resumed_config(state, launch_settings=None):
    """The config a resume state was saved with, for this process; ``launch_settings`` may
    change where the run's processes run (:data:`~recbole_recgpt.distributed.LAUNCH_KEYS`)."""
    config = state["config"]  # keys it lacks get their yaml defaults in for_this_process
    for key, value in (launch_settings or {}).items():
        if key not in distributed.LAUNCH_KEYS:
            raise ConfigError(f"a resumed run keeps its settings; '{key}' cannot change (only {', '.join(distributed.LAUNCH_KEYS)})")
        config[key] = config._convert_config_dict({key: value})[key]
    return for_this_process(config)


def jsonable_config(config):
    """A resolved ``Config`` as a JSON-ready dict."""
    return {key: jsonable(value) for key, value in config.final_config_dict.items()}


def plain_metrics(result):
    """RecBole's metric dict (values may be tensors or numpy floats) as ``{metric: float}``."""
    return None if result is None else {key: float(value) for key, value in result.items()}


def jsonable(value):
    """A config value as JSON: containers kept, anything else (a torch device, an enum) as its str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


__all__ = ["run_recgpt", "objective_function", "load_data_and_model", "build", "jsonable", "jsonable_config", "plain_metrics"]
