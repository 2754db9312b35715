"""Model and trainer registry: the plugin first, then RecBole's built-ins."""

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_recgpt.model import RecGPT
from recbole_recgpt.trainer import EpochTimer, RecGPTTrainer

MODELS = {"RecGPT": RecGPT}
TRAINERS = {"RecGPT": RecGPTTrainer}


def get_model(model_name):
    """Model class by name (case-insensitive for RecBole's built-ins)."""
    if model_name in MODELS:
        return MODELS[model_name]
    return recbole_get_model(model_name)


def get_trainer(model_type, model_name):
    """Trainer class for a model; RecBole's trainers get per-epoch timing added."""
    if model_name in TRAINERS:
        return TRAINERS[model_name]
    trainer = recbole_get_trainer(model_type, model_name)
    return type(trainer.__name__, (EpochTimer, trainer), {})
