"""RecGPTTrainer: pre-training, then prompt-tuning, each through RecBole's own ``fit`` loop."""

import os
from time import time

import numpy as np

from recbole.trainer import Trainer

from recbole_recgpt.compat import load_checkpoint
from recbole_recgpt.data import UserSequenceDataLoader


class EpochTimer:
    """Trainer mixin: records epochs and seconds of training / validation per phase."""

    phase_name = "train"

    def _phase_record(self):
        if not hasattr(self, "phases"):
            self.phases = {}
        return self.phases.setdefault(
            self.phase_name, {"epochs": 0, "train_seconds": 0.0, "valid_seconds": 0.0, "wall_seconds": 0.0}
        )

    def _train_epoch(self, *args, **kwargs):
        start = time()
        loss = super()._train_epoch(*args, **kwargs)
        record = self._phase_record()
        record["epochs"] += 1
        record["train_seconds"] += time() - start
        return loss

    def _valid_epoch(self, *args, **kwargs):
        start = time()
        result = super()._valid_epoch(*args, **kwargs)
        self._phase_record()["valid_seconds"] += time() - start
        return result

    def fit(self, *args, **kwargs):
        start = time()
        result = super().fit(*args, **kwargs)
        self._phase_record()["wall_seconds"] += time() - start
        return result


class RecGPTTrainer(EpochTimer, Trainer):
    r"""Phase 1 (``pretrain``): next-item BCE with sampled negatives on whole user sequences.
    Phase 2 (``finetune``, when ``prompt_tuning``): full-softmax NLL on prompt-extended
    sequences with ``finetune_epochs`` and ``finetune_learning_rate``.

    Each phase early-stops on ``valid_metric`` and keeps its best checkpoint
    (``<checkpoint>-pretrain.pth``, ``<checkpoint>-finetune.pth``); phase 2 starts from
    phase 1's best. ``pretrained_checkpoint`` skips phase 1 and starts from a saved model.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.checkpoint_stem = os.path.splitext(self.saved_model_file)[0]

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        train_dataset = train_data.dataset
        run_phase = dict(
            valid_data=valid_data, verbose=verbose, saved=saved, show_progress=show_progress, callback_fn=callback_fn
        )
        result = (self.best_valid_score, self.best_valid_result)
        if self.config["pretrained_checkpoint"]:
            self.load_pretrained(self.config["pretrained_checkpoint"])
        else:
            loader = UserSequenceDataLoader(self.config, train_dataset, neg_sample_num=self.config["neg_sample_num"])
            result = self.run_phase("pretrain", loader, self.config["epochs"], self.config["learning_rate"], **run_phase)
        if self.config["prompt_tuning"]:
            self.model.start_prompt_tuning()
            loader = UserSequenceDataLoader(self.config, train_dataset)
            if self.model.prompt_writer is not None:
                # A frozen writer's prompts never change: write them once for the phase.
                loader.write_prompts(self.model.prompted_training_batch)
            result = self.run_phase(
                "finetune", loader, self.config["finetune_epochs"], self.config["finetune_learning_rate"], **run_phase
            )
        return result

    def run_phase(self, name, train_loader, epochs, learning_rate, valid_data=None, saved=True, **fit_kwargs):
        """Train one phase from a fresh optimizer and early-stopping state; leave the model at
        the phase's best checkpoint (when checkpoints are saved and validated)."""
        self.phase_name = name
        self.epochs = epochs
        self.eval_step = min(self.config["eval_step"], epochs)
        self.start_epoch = 0
        self.cur_step = 0
        self.best_valid_score = -np.inf if self.valid_metric_bigger else np.inf
        self.best_valid_result = None
        self.train_loss_dict = {}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._build_optimizer(params=trainable, learning_rate=learning_rate)
        self.saved_model_file = f"{self.checkpoint_stem}-{name}.pth"
        result = super().fit(train_loader, valid_data, saved=saved, **fit_kwargs)
        self._phase_record()["checkpoint"] = self.saved_model_file if saved else None
        if saved and os.path.exists(self.saved_model_file):
            state = load_checkpoint(self.saved_model_file, map_location=self.device)["state_dict"]
            self.model.load_state_dict(state)
        return result

    def load_pretrained(self, path):
        """Start from the phase-1 network of a saved RecGPT checkpoint."""
        state = load_checkpoint(path, map_location=self.device)["state_dict"]
        network = {key[len("gpt."):]: value for key, value in state.items() if key.startswith("gpt.")}
        self.model.gpt.load_state_dict(network)
        self.logger.info(f"Phase 1 skipped: pre-trained network loaded from {path}")
