"""Checks that turn bad input into one-line errors before RecBole meets it."""

import difflib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

import recbole
from recbole.utils import ModelType
from recbole.utils.argument_list import dataset_arguments, evaluation_arguments, general_arguments, training_arguments

from recbole_recgpt.checkpoints import read_checkpoint
from recbole_recgpt.errors import CheckpointError, ConfigError, DataError, check_choice, check_integer, check_probability
from recbole_recgpt.model.layers import check_transformer_config

RECBOLE_PROPERTIES = Path(recbole.__file__).resolve().parent / "properties"
# Keys RecBole reads without listing them in any yaml file.
EXTRA_RECBOLE_KEYS = {"model", "dataset", "config_files", "local_rank", "nproc", "world_size", "ip", "port", "offset"}


def read_config_file(path):
    """Parse one yaml config file as RecBole will, or raise :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path given to --config_files")
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.FullLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid syntax"
        raise ConfigError(f"config file {path} is not valid YAML{where} ({problem}); fix the file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read ({error}); check it is a readable text file") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold 'key: value' lines, not a {type(content).__name__}")
    return content


def known_parameters(model_name, project_yaml_files):
    """Every parameter name a run of ``model_name`` understands."""
    known = set(EXTRA_RECBOLE_KEYS)
    for names in (general_arguments, training_arguments, evaluation_arguments, dataset_arguments):
        known.update(names)
    recbole_files = [
        RECBOLE_PROPERTIES / "overall.yaml",
        RECBOLE_PROPERTIES / "dataset" / "sample.yaml",
        RECBOLE_PROPERTIES / "model" / f"{model_name}.yaml",
        *sorted((RECBOLE_PROPERTIES / "quick_start_config").glob("*.yaml")),
    ]
    for path in [*recbole_files, *map(Path, project_yaml_files)]:
        if path.is_file():
            known.update(read_config_file(path))
    return known


def check_parameter_names(names, known, source):
    """Raise :class:`ConfigError` for the first name a run would silently ignore."""
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "see properties/ and RecBole's parameter list"
            raise ConfigError(f"unknown parameter '{name}' in {source}; {hint}")


def inter_columns(config):
    """``(path, columns)`` of ``<data_path>/<dataset>.inter``: its header as ``{name: type}``
    in file order. Raises :class:`DataError` when the file is missing, unreadable or empty."""
    dataset, folder = config["dataset"], Path(config["data_path"])
    inter = folder / f"{dataset}.inter"
    if not folder.parent.is_dir():
        raise DataError(
            f"dataset '{dataset}' not found: data folder {folder.parent} does not exist (from {Path.cwd()}); "
            f"run from the folder that holds dataset/ (the repository's root for the paper datasets) "
            f"or pass --data_path=<folder holding {dataset}/>"
        )
    if not inter.is_file():
        raise DataError(
            f"dataset '{dataset}' not found: {inter} does not exist and nothing can be downloaded offline; "
            f"put {dataset}.inter there or pass --data_path=<folder holding {dataset}/> "
            "(the paper datasets ship in the repository's dataset/: run from its root)"
        )
    if not os.access(inter, os.R_OK):
        raise DataError(f"{inter} is not readable; fix its permissions")
    with open(inter, encoding="utf-8") as lines:
        header = lines.readline().rstrip("\n")
    if not header:
        raise DataError(f"{inter} is empty; it needs a header line and one line per interaction")
    columns = dict(
        column.split(":", 1) if ":" in column else (column, "?") for column in header.split(config["field_separator"])
    )
    return inter, columns


def check_dataset_files(config):
    """Make sure ``<data_path>/<dataset>.inter`` exists and is a usable sequential file."""
    inter, columns = inter_columns(config)
    for key, meaning in (("USER_ID_FIELD", "user"), ("ITEM_ID_FIELD", "item"), ("TIME_FIELD", "time")):
        if config[key] not in columns:
            raise DataError(
                f"{inter} has no '{config[key]}' column ({key}; the file has: {', '.join(columns)}); a sequential "
                f"run needs user, item and time columns: set {key} to the name of your {meaning} column "
                f"(--{key}=NAME or in a yaml)" + (", or add a time (or position) column" if key == "TIME_FIELD" else "")
            )
    with open(inter, encoding="utf-8") as lines:
        next(lines)
        has_rows = any(line.strip() for line in lines)
    if not has_rows:
        raise DataError(f"{inter} has a header but no interactions")
    time_field, separator = config["TIME_FIELD"], config["field_separator"]
    if columns[time_field] != "float":
        raise DataError(f"{inter}: column '{time_field}' is '{columns[time_field]}'; declare it '{time_field}:float'")
    header_name = f"{time_field}:float"
    times = pd.read_csv(inter, sep=separator, usecols=[header_name], dtype=str, keep_default_na=False)[header_name]
    numeric = pd.to_numeric(times, errors="coerce")
    bad = numeric.isna() & (times.str.strip() != "")
    if bad.any():
        row = int(bad.idxmax())
        raise DataError(
            f"{inter} line {row + 2}: timestamp '{times[row]}' is not a number; the time column must be numeric"
        )


def check_pretrained_checkpoint(path, config, map_location="cpu"):
    """The ``pretrained_checkpoint`` of a run, loaded; :class:`CheckpointError` when it is
    missing, not a checkpoint, or of another model or dataset. (Whether its tensors fit the
    model is checked when the network is loaded.)"""
    checkpoint = read_checkpoint(path, "pretrained", map_location)
    saved = checkpoint["config"]
    if (saved["model"], saved["dataset"]) != (config["model"], config["dataset"]):
        raise CheckpointError(
            f"pretrained_checkpoint {path} is a {saved['model']} model of dataset '{saved['dataset']}'; "
            f"this run is {config['model']} on '{config['dataset']}'"
        )
    return checkpoint


def check_catalogue(config, dataset):
    """The evaluation's lists fit the catalogue the data holds (:class:`ConfigError` if not):
    a top-k longer than the items there are has nothing to fill it with."""
    items = dataset.item_num - 1  # id 0 is padding
    largest_k = max(config["topk"])
    if largest_k > items:
        raise ConfigError(
            f"topk={largest_k} is more than the {items} items of dataset '{config['dataset']}'; "
            f"set topk to at most {items}"
        )


# The parts after training that each leave-one-out mode of RecBole's split holds out, in order.
LEAVE_ONE_OUT_PARTS = {"valid_and_test": ("validation", "test"), "valid_only": ("validation",), "test_only": ("test",)}


def check_run_settings(config):
    """The settings every run reads, whatever its model: the seed, the leave-one-out mode of
    the split, and a sequential model's ``MAX_ITEM_LIST_LENGTH`` (the history it sees)."""
    check_integer("seed", config["seed"], 0)
    mode = config["eval_args"]["split"].get("LS")
    if mode is not None:
        check_choice("eval_args split LS", mode, LEAVE_ONE_OUT_PARTS)
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        check_integer("MAX_ITEM_LIST_LENGTH", config["MAX_ITEM_LIST_LENGTH"], 1)


def check_recbole_model(config):
    """The network of a RecBole baseline, checked as RecGPT checks its own before data loads:
    GRU4Rec's sizes and dropout, and the encoder keys of SASRec, BERT4Rec and RecBole's other
    transformers (torch would stop on them after loading, or, with ``hidden_size=0`` in a
    transformer, train to chance level without a word)."""
    if config["model"] == "GRU4Rec":
        for key in ("embedding_size", "hidden_size", "num_layers"):
            check_integer(key, config[key], 1)
        check_probability("dropout_prob", config["dropout_prob"])
    else:
        check_transformer_config(config)


def check_split(config, dataset):
    """Leave-one-out gives every part of the split rows (:class:`DataError` if not): with no
    validation rows early stopping has nothing to choose by, and the best checkpoint would
    silently be the last; with no training rows RecBole fails deep inside its sampler.

    Per user, leave-one-out keeps the last row for the last part (test), the one before for
    validation, and the rest for training: a part needs users with 1 (training), 3
    (validation before test) or 2 (the last part) rows. A sequential model's rows are its
    (prefix, next item) pairs, one fewer than the user's interactions."""
    mode = config["eval_args"]["split"].get("LS")
    if mode is None:
        return
    parts = LEAVE_ONE_OUT_PARTS[mode]
    needs = {"training": 1, **{part: len(parts) - index + 1 for index, part in enumerate(parts)}}
    # Read before RecBole's build, which splits the interactions and makes a sequential model's pairs.
    interactions = np.bincount(np.asarray(dataset.inter_feat[dataset.uid_field]))
    longest = int(interactions.max()) if len(interactions) else 0
    extra = 1 if config["MODEL_TYPE"] == ModelType.SEQUENTIAL else 0
    for part, needed in needs.items():
        if longest - extra < needed:
            raise DataError(
                f"dataset '{config['dataset']}' has no {part} rows: leave-one-out gives a user one only from "
                f"{needed + extra} interactions on, and its longest history has {longest}; "
                "use data with longer histories (the paper's datasets keep users with 5 or more)"
            )
