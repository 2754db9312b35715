"""RecGPT as a RecBole plugin."""

from recbole_recgpt import compat  # noqa: F401  (must patch RecBole before it is used)
from recbole_recgpt.model import RecGPT
from recbole_recgpt.trainer import RecGPTTrainer
from recbole_recgpt.quick_start import load_data_and_model, objective_function, run_recgpt
from recbole_recgpt.recommend import recommend

__all__ = ["RecGPT", "RecGPTTrainer", "run_recgpt", "objective_function", "load_data_and_model", "recommend"]
