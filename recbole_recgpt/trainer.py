"""Trainers: RecBole's own ``fit`` loop, run in named phases that can be resumed.

``PhasedTrainer`` is a mixin for any RecBole trainer: it times each phase, writes checkpoints
atomically, stops on a non-finite loss with a clear error, and after every epoch saves a
resume state (model, optimizer, early-stopping counters, random-number generators) from
which a killed run continues to the same result. ``RecGPTTrainer`` runs RecGPT's two phases.
"""

import glob
import os
import random
from time import time

import numpy as np
import torch

from recbole.trainer import Trainer
from recbole.utils import get_local_time

from recbole_recgpt.compat import load_checkpoint
from recbole_recgpt.data import TARGET_PREFIX, UserSequenceDataLoader
from recbole_recgpt.errors import CheckpointError, ConfigError, TrainingError


def save_atomically(state, path):
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a file."""
    temporary = f"{path}.tmp"
    torch.save(state, temporary, pickle_protocol=4)
    os.replace(temporary, path)


def unused_stem(stem):
    """``stem``, or ``stem-2``, ``stem-3``...: runs started in the same second (tuning
    trials, parallel jobs) must not overwrite each other's checkpoints."""
    candidate, number = stem, 1
    while glob.glob(f"{glob.escape(candidate)}-*.pth"):
        number += 1
        candidate = f"{stem}-{number}"
    return candidate


def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PhasedTrainer:
    """Mixin for a RecBole ``Trainer``: resumable, timed training phases."""

    phase_order = ("train",)

    def __init__(self, config, model):
        super().__init__(config, model)
        self.checkpoint_stem = unused_stem(
            os.path.join(self.checkpoint_dir, f"{config['model']}-{config['dataset']}-{get_local_time()}")
        )
        self.phases = {}
        self.phase_name = self.phase_order[0]
        self.epoch = None
        self.resume_state = None

    @property
    def resume_file(self):
        return f"{self.checkpoint_stem}-resume.pth"

    def resume_from(self, state):
        """Continue the run that saved ``state`` (see :meth:`save_resume_state`)."""
        self.resume_state = state
        self.checkpoint_stem = state["checkpoint_stem"]
        self.phases = state["phases"]

    def resumes_past(self, name):
        """Whether a resumed run has already finished phase ``name``."""
        if self.resume_state is None:
            return False
        return self.phase_order.index(self.resume_state["phase"]) > self.phase_order.index(name)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        return self.run_phase(
            self.phase_order[0], lambda: train_data, self.config["epochs"], self.config["learning_rate"],
            valid_data=valid_data, verbose=verbose, saved=saved, show_progress=show_progress, callback_fn=callback_fn,
        )

    def run_phase(self, name, make_loader, epochs, learning_rate, valid_data=None, saved=True, callback_fn=None, **fit_kwargs):
        """Train phase ``name`` from a fresh optimizer and early-stopping state (or from the
        resume state), then leave the model at the phase's best checkpoint."""
        self.phase_name = name
        record = self.phase_record()
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

        state, self.resume_state = (self.resume_state, None) if self._resumes(name) else (None, None)
        if state is not None:
            self._restore(state)
            if state["phase_done"]:
                return self.best_valid_score, self.best_valid_result
        else:
            # Even a run killed in its first epoch can resume, without redoing earlier phases.
            self.save_resume_state(-1, phase_done=False)

        def end_of_epoch(epoch_idx, valid_score):
            record["valid_curve"].append([epoch_idx, float(valid_score)])
            if callback_fn:
                callback_fn(epoch_idx, valid_score)
            self.save_resume_state(epoch_idx, phase_done=False)

        self.logger.info(f"Phase {name}: epochs {self.start_epoch}..{epochs - 1}, learning rate {learning_rate}")
        start = time()
        train_loader = make_loader()
        result = super().fit(train_loader, valid_data, saved=saved, callback_fn=end_of_epoch, **fit_kwargs)
        record["wall_seconds"] += time() - start
        record["checkpoint"] = self.saved_model_file if saved else None
        if saved and os.path.exists(self.saved_model_file):
            self.model.load_state_dict(load_checkpoint(self.saved_model_file, self.device)["state_dict"])
        self.save_resume_state(self.epochs - 1, phase_done=True)
        return result

    def phase_record(self):
        """Timing record of the current phase."""
        return self.phases.setdefault(
            self.phase_name,
            {"epochs": 0, "train_seconds": 0.0, "valid_seconds": 0.0, "wall_seconds": 0.0, "valid_curve": []},
        )

    def _resumes(self, name):
        return self.resume_state is not None and self.resume_state["phase"] == name

    def save_resume_state(self, epoch_idx, phase_done):
        save_atomically(
            {
                "config": self.config,
                "checkpoint_stem": self.checkpoint_stem,
                "phase": self.phase_name,
                "phase_done": phase_done,
                "epoch": epoch_idx,
                "state_dict": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "cur_step": self.cur_step,
                "best_valid_score": self.best_valid_score,
                "best_valid_result": self.best_valid_result,
                "phases": self.phases,
                "rng": rng_state(),
            },
            self.resume_file,
        )

    def _restore(self, state):
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        set_rng_state(state["rng"])
        self.logger.info(f"Resuming phase {state['phase']} after epoch {state['epoch']} from {self.resume_file}")

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        super()._save_checkpoint(epoch, verbose=False, saved_model_file=f"{target}.tmp", **kwargs)
        os.replace(f"{target}.tmp", target)
        if verbose:
            self.logger.info(f"Saving current: {target}")

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        self.epoch = epoch_idx
        start = time()
        loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        record = self.phase_record()
        record["epochs"] += 1
        record["train_seconds"] += time() - start
        return loss

    def _valid_epoch(self, *args, **kwargs):
        start = time()
        result = super()._valid_epoch(*args, **kwargs)
        self.phase_record()["valid_seconds"] += time() - start
        return result

    def _check_nan(self, loss):
        if not torch.isfinite(loss):
            kept = [path for path in (self.saved_model_file, self.resume_file) if os.path.exists(path)]
            raise TrainingError(
                f"phase {self.phase_name} stopped: the training loss became {loss.item()} in epoch {self.epoch}; "
                f"kept from earlier epochs: {', '.join(kept) or 'nothing (it failed in the first epoch)'}; "
                "lower the learning rate (or raise clip_grad_norm) and rerun"
            )


class RecGPTTrainer(PhasedTrainer, Trainer):
    r"""Phase 1 (``pretrain``): next-item BCE with sampled negatives (or full-softmax NLL,
    ``pretrain_loss: ce``) on whole user sequences.
    Phase 2 (``finetune``, when ``prompt_tuning``): full-softmax NLL on prompt-extended
    sequences with ``finetune_epochs`` and ``finetune_learning_rate``.

    Each phase early-stops on ``valid_metric`` and keeps its best checkpoint
    (``<checkpoint>-pretrain.pth``, ``<checkpoint>-finetune.pth``); phase 2 starts from
    phase 1's best. ``pretrained_checkpoint`` skips phase 1 and starts from a saved model.
    """

    phase_order = ("pretrain", "finetune")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        config, dataset = self.config, train_data.dataset
        phase_kwargs = dict(
            valid_data=valid_data, verbose=verbose, saved=saved, show_progress=show_progress, callback_fn=callback_fn
        )
        result = (self.best_valid_score, self.best_valid_result)
        if config["pretrained_checkpoint"] and self.resume_state is None:
            self.load_pretrained(config["pretrained_checkpoint"])
        elif not self.resumes_past("pretrain"):
            result = self.run_phase(
                "pretrain",
                lambda: UserSequenceDataLoader(
                    config, dataset, neg_sample_num=config["neg_sample_num"] if config["pretrain_loss"] == "bce" else 0
                ),
                config["epochs"], config["learning_rate"], **phase_kwargs,
            )
        if config["prompt_tuning"]:
            self.model.start_prompt_tuning()
            result = self.run_phase(
                "finetune", lambda: self.prompt_tuning_loader(dataset),
                config["finetune_epochs"], config["finetune_learning_rate"], **phase_kwargs,
            )
        return result

    def prompt_tuning_loader(self, dataset):
        loader = UserSequenceDataLoader(self.config, dataset)
        if self.model.prompt_writer is not None:
            # A frozen writer's prompts never change: write them once for the phase.
            start = time()
            loader.write_prompts(self.model.prompted_training_batch)
            self.phase_record()["prompt_writing_seconds"] = time() - start
        return loader

    def load_pretrained(self, path):
        """Start from the phase-1 network of a saved RecGPT checkpoint."""
        if not os.path.isfile(path):
            raise CheckpointError(f"pretrained_checkpoint {path} does not exist; give the path of a saved RecGPT checkpoint")
        checkpoint = load_checkpoint(path, self.device)
        saved = checkpoint["config"]
        for key in ("model", "dataset"):
            if saved[key] != self.config[key]:
                raise CheckpointError(
                    f"pretrained_checkpoint {path} is a {saved['model']} model of dataset '{saved['dataset']}'; "
                    f"this run is {self.config['model']} on '{self.config['dataset']}'"
                )
        prefix = "gpt."
        network = {key[len(prefix):]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
        expected = self.model.gpt.state_dict()
        network["position_embedding.weight"] = self.fit_position_table(
            network.get("position_embedding.weight"), expected["position_embedding.weight"]
        )
        for key, value in expected.items():
            if key not in network or network[key].shape != value.shape:
                found = tuple(network[key].shape) if key in network else "nothing"
                raise CheckpointError(
                    f"pretrained_checkpoint {path} does not fit this model: {key} has shape {found}, this run needs "
                    f"{tuple(value.shape)}; use the same hidden_size / n_layers / inner_size / n_positions / "
                    "user_embedding as the run that saved it"
                )
        self.model.gpt.load_state_dict(network)
        self.logger.info(f"Phase 1 skipped: pre-trained network loaded from {path}")

    def fit_position_table(self, saved, own):
        """The saved position table resized to this model's: phase 1 trains only the first
        ``MAX_ITEM_LIST_LENGTH`` positions, and ``n_positions`` grows with the prompt length,
        so a phase-1 network serves phase 2 runs of any prompt length. Rows past the saved
        table keep this model's initial values. (Other shapes must match exactly.)"""
        trained = self.config["MAX_ITEM_LIST_LENGTH"]
        if saved is None or saved.shape[1] != own.shape[1] or min(len(saved), len(own)) < trained:
            return saved
        table = own.clone()
        rows = min(len(saved), len(own))
        table[:rows] = saved[:rows]
        return table


class WholeSequenceTrainer(PhasedTrainer, Trainer):
    r"""Opt-in trainer (``baseline_trainer: whole_sequence``) for RecBole's causal sequential
    models with full-softmax loss (SASRec, GRU4Rec with ``loss_type: CE``).

    RecBole feeds them one padded row per prefix. Their output at position t of one pass
    over the whole sequence already is that row's output (causal attention, a left-to-right
    GRU), so this trainer feeds whole user sequences, reads the output at every position
    through a forward hook on the model's own layer, and averages the cross-entropy over all
    (prefix, next item) pairs: the same pairs and loss as RecBole's rows, without the padded
    recomputation. Evaluation is RecBole's, unchanged. (BERT4Rec is bidirectional, so one
    pass does not give its per-row outputs; it keeps RecBole's trainer.)
    """

    # The module whose output holds every position's sequence representation [B, T, H].
    ALL_POSITIONS_MODULE = {"SASRec": "trm_encoder", "GRU4Rec": "dense"}

    def __init__(self, config, model):
        name = type(model).__name__
        if name not in self.ALL_POSITIONS_MODULE or config["loss_type"] != "CE":
            raise ConfigError(
                f"baseline_trainer=whole_sequence supports {' and '.join(self.ALL_POSITIONS_MODULE)} with "
                f"loss_type CE, not {name}; use baseline_trainer=recbole"
            )
        super().__init__(config, model)
        self.all_positions_module = getattr(model, self.ALL_POSITIONS_MODULE[name])

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        dataset = train_data.dataset
        return self.run_phase(
            "train", lambda: UserSequenceDataLoader(self.config, dataset), self.config["epochs"],
            self.config["learning_rate"], valid_data=valid_data, verbose=verbose, saved=saved,
            show_progress=show_progress, callback_fn=callback_fn,
        )

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        return super()._train_epoch(train_data, epoch_idx, loss_func=self.whole_sequence_loss, show_progress=show_progress)

    def whole_sequence_loss(self, interaction):
        """Mean cross-entropy over every (prefix, next item) pair of the batch's sequences."""
        model = self.model
        item_seq = interaction[model.ITEM_SEQ]
        target_seq = interaction[TARGET_PREFIX + model.ITEM_SEQ]
        outputs = []
        hook = self.all_positions_module.register_forward_hook(lambda module, args, output: outputs.append(output))
        try:
            model.forward(item_seq, interaction[model.ITEM_SEQ_LEN])
        finally:
            hook.remove()
        hidden = outputs[0][-1] if isinstance(outputs[0], list) else outputs[0]  # [B, T, H]
        supervised = target_seq > 0
        logits = hidden[supervised] @ model.item_embedding.weight.t()
        return torch.nn.functional.cross_entropy(logits, target_seq[supervised])
