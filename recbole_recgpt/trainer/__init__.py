"""Trainers, one job per file: resumable phases (``phased``), RecGPT's two phases
(``recgpt``) and the baselines' whole-sequence trainer (``whole_sequence``)."""

from recbole_recgpt.trainer.phased import PhasedTrainer, save_atomically
from recbole_recgpt.trainer.recgpt import RecGPTTrainer
from recbole_recgpt.trainer.whole_sequence import WholeSequenceTrainer

__all__ = ["PhasedTrainer", "RecGPTTrainer", "WholeSequenceTrainer", "save_atomically"]
