"""Plugin-aware RecBole configuration: the project's yaml layers and RecGPT's checks."""

import contextlib
import sys
from pathlib import Path

from recbole.config import Config

from recbole_recgpt.checks import check_parameter_names, known_parameters, read_config_file
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.model.prompts import PROMPT_MODES
from recbole_recgpt.model.recgpt import RecGPT, required_positions
from recbole_recgpt.utils import get_model

PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"
PROMPT_GENERATORS = ("pretrained", "current")
PRETRAIN_LOSSES = ("bce", "ce")
PROMPT_POSITIONS = ("sequence", "item")


def project_config_files(model_name, dataset):
    """The project's yaml layers of a run: the shared protocol (``overall.yaml``), then the
    dataset's file, then the model's file, where they exist."""
    layers = [
        PROPERTIES_DIR / "overall.yaml",
        PROPERTIES_DIR / "dataset" / f"{dataset}.yaml",
        PROPERTIES_DIR / "model" / f"{model_name}.yaml",
    ]
    return [str(path) for path in layers if path.is_file()]


@contextlib.contextmanager
def _without_command_line():
    # RecBole's Config also parses sys.argv; the plugin passes overrides explicitly instead,
    # so that the same call behaves alike from the CLI, pytest and a notebook.
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def create_config(model="RecGPT", dataset="ml-100k", config_files=None, config_dict=None):
    """RecBole ``Config`` for any model (plugin or built-in): the project's yaml layers, then
    ``config_files``, then ``config_dict``. Unknown parameter names are errors, not ignored."""
    model_class = get_model(model)
    project_files = project_config_files(model_class.__name__, dataset)
    known = known_parameters(model_class.__name__, project_files)
    for path in config_files or []:
        check_parameter_names(read_config_file(path), known, f"config file {path}")
    check_parameter_names(config_dict or {}, known, "the command line")
    with _without_command_line():
        config = Config(
            model=model_class,
            dataset=dataset,
            config_file_list=project_files + list(config_files or []),
            config_dict=config_dict,
        )
    if model_class is RecGPT:
        validate_recgpt_config(config)
    return config


def validate_recgpt_config(config):
    """Raise :class:`ConfigError` for RecGPT parameters that cannot work together."""
    for key in ("epochs", "finetune_epochs", "prompt_length"):
        if not isinstance(config[key], int) or config[key] < 0:
            raise ConfigError(f"{key}={config[key]!r} must be an integer >= 0")
    for key in ("learning_rate", "finetune_learning_rate"):
        if not isinstance(config[key], (int, float)) or config[key] <= 0:
            raise ConfigError(f"{key}={config[key]!r} must be a number > 0")
    if not isinstance(config["neg_sample_num"], int) or config["neg_sample_num"] < 1:
        raise ConfigError(f"neg_sample_num={config['neg_sample_num']!r} must be an integer >= 1")
    if config["hidden_size"] % config["n_heads"]:
        raise ConfigError(
            f"hidden_size={config['hidden_size']} is not divisible by n_heads={config['n_heads']}; "
            "choose values where it is"
        )
    for key, choices in (
        ("prompt_mode", PROMPT_MODES), ("prompt_generator", PROMPT_GENERATORS), ("pretrain_loss", PRETRAIN_LOSSES),
        ("prompt_positions", PROMPT_POSITIONS),
    ):
        if config[key] not in choices:
            raise ConfigError(f"{key}={config[key]!r} is unknown; use one of {', '.join(choices)}")
    largest_k = max(config["topk"])
    if config["two_stage"]:
        if not isinstance(config["stage1_n"], int) or not 1 <= config["stage1_n"] <= largest_k:
            raise ConfigError(
                f"stage1_n={config['stage1_n']!r} must be between 1 and the largest topk ({largest_k})"
            )
        if config["prompt_length"] > config["stage1_n"]:
            raise ConfigError(
                f"prompt_length={config['prompt_length']} exceeds stage1_n={config['stage1_n']}: stage 2 "
                "appends the first prompt_length stage-1 items; raise stage1_n or lower prompt_length"
            )
    needed = required_positions(
        config["MAX_ITEM_LIST_LENGTH"], config["prompt_length"], config["prompt_mode"], config["prompt_positions"]
    )
    if config["n_positions"] is not None and config["n_positions"] < needed:
        raise ConfigError(
            f"n_positions={config['n_positions']} is too small: prompt_length={config['prompt_length']} "
            f"({config['prompt_mode']}) with MAX_ITEM_LIST_LENGTH={config['MAX_ITEM_LIST_LENGTH']} needs "
            f"{needed}; raise n_positions (or set it to ~) or shorten the prompts or the history"
        )
