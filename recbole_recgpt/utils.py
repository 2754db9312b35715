"""Model and trainer registry: the plugin first, then RecBole's built-ins."""

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_recgpt.checks import check_recbole_model, check_run_settings
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.model import RecGPT
from recbole_recgpt.protocol import EvaluationProtocol
from recbole_recgpt.trainer import PhasedTrainer, RecGPTTrainer, WholeSequenceTrainer

MODELS = {"RecGPT": RecGPT}
TRAINERS = {"RecGPT": RecGPTTrainer}


def get_model(model_name):
    """Model class by name: the plugin's first, then RecBole's."""
    if model_name in MODELS:
        return MODELS[model_name]
    try:
        return recbole_get_model(model_name)
    except (ValueError, ImportError):  # RecBole tries its lightgbm/xgboost wrappers last
        raise ConfigError(
            f"unknown model '{model_name}'; use RecGPT or a RecBole model such as SASRec, BERT4Rec, GRU4Rec or Pop"
        ) from None


BASELINE_TRAINERS = ("auto", "recbole", "whole_sequence")


def resolve_baseline_trainer(config):
    """Settle ``baseline_trainer: auto`` in ``config``: the whole-sequence trainer for the
    models and losses it supports (the comparison tables are made with it), RecBole's own
    trainer for every other model. The resolved config, which runs record, names the trainer
    that ran; a plugin model's own trainer ignores the key."""
    choice = config["baseline_trainer"]
    if choice not in BASELINE_TRAINERS:
        raise ConfigError(f"baseline_trainer={choice!r} is unknown; use one of {', '.join(BASELINE_TRAINERS)}")
    if choice == "auto":
        config["baseline_trainer"] = "whole_sequence" if WholeSequenceTrainer.supports(config) else "recbole"


def get_trainer(model_type, model_name, baseline_trainer="recbole"):
    """Trainer class for a model. RecBole's trainers become resumable and timed;
    ``baseline_trainer="whole_sequence"`` picks :class:`WholeSequenceTrainer` instead
    (``auto`` is settled by :func:`resolve_baseline_trainer` when the config is made)."""
    if model_name in TRAINERS:
        return TRAINERS[model_name]
    if baseline_trainer not in BASELINE_TRAINERS[1:]:
        raise ConfigError(f"baseline_trainer={baseline_trainer!r} is unknown; use recbole or whole_sequence")
    if baseline_trainer == "whole_sequence":
        return WholeSequenceTrainer
    trainer = recbole_get_trainer(model_type, model_name)
    return type(trainer.__name__, (PhasedTrainer, trainer), {})


def trainer_class(config):
    """The trainer class a config asks for (``baseline_trainer`` for RecBole's models)."""
    return get_trainer(config["MODEL_TYPE"], config["model"], config["baseline_trainer"])


def validate(config):
    """Ask every component of a run whether it can honour ``config``: the evaluation
    protocol, the settings every run reads (seed, split, history length), the model class
    and the trainer class (each its own ``check_config``; a RecBole model's network, which it
    does not check, :func:`check_recbole_model`), and the whole-sequence trainer
    for the loss keys only it reads. :class:`ConfigError` names the
    first problem. Settles ``baseline_trainer: auto`` on the way; returns the trainer class."""
    EvaluationProtocol.from_config(config)
    check_run_settings(config)
    resolve_baseline_trainer(config)
    trainer = trainer_class(config)
    model = get_model(config["model"])
    for component in (model, trainer):
        check = getattr(component, "check_config", None)
        if check is not None:
            check(config)
    if model is not RecGPT:
        check_recbole_model(config)
    WholeSequenceTrainer.check_not_set_elsewhere(config, trainer)
    return trainer
