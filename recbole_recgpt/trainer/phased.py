"""RecBole's own ``fit`` loop, run in named phases that can be resumed.

``PhasedTrainer`` is a mixin for any RecBole trainer: it times each phase, writes checkpoints
atomically, stops on a non-finite loss with a clear error, and after every epoch saves a
resume state (model, optimizer, early-stopping counters, random-number generators) from
which a killed run continues to the same result. With ``show_progress``, training and
evaluation show tqdm bars named by phase, with an ETA, on a terminal only.

In a run of several processes (:mod:`recbole_recgpt.distributed`), RecBole's training loop
averages each step's gradients through DistributedDataParallel; process 0 alone writes
checkpoints and resume states, and the others wait for a complete file before they read one.
Each process scores a share of the evaluation batches, and the per-user results of all are
gathered before the metrics are computed, so they equal those of one process.
"""

import glob
import os
import random
from datetime import datetime
from time import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from recbole.evaluator.register import metric_information

from recbole_recgpt import distributed
from recbole_recgpt.collector import TopkCollector
from recbole_recgpt.ranking import TopItems, excluded_lists, full_sort_top_k
from recbole_recgpt.checkpoints import read_checkpoint
from recbole_recgpt.errors import ConfigError, TrainingError, check_integer, check_positive_number
from recbole_recgpt.files import replace_atomically


def save_atomically(state, path):
    """``torch.save`` a whole file or none (:func:`replace_atomically`)."""
    with replace_atomically(path) as temporary:
        torch.save(state, temporary, pickle_protocol=4)


def checkpoint_stem(checkpoint_dir, model, dataset):
    """``<checkpoint_dir>/<model>-<dataset>-<time>``, the time RecBole's (to the second) plus
    milliseconds, made unique among the files there (:func:`unused_stem`). The milliseconds
    keep a name from being reused after its files are deleted, so that a record's checkpoint
    path names one trained model: a run trained again in a fresh checkout, in the same
    second, had taken its predecessor's name, and the rows scored from the old model read
    as made from the new one."""
    now = datetime.now()
    moment = f"{now:%b-%d-%Y_%H-%M-%S}-{now.microsecond // 1000:03d}"
    return unused_stem(os.path.join(checkpoint_dir, f"{model}-{dataset}-{moment}"))


def unused_stem(stem):
    """``stem``, or ``stem-2``, ``stem-3``...: runs started at the same moment (tuning
    trials, parallel jobs) must not overwrite each other's checkpoints."""
    candidate, number = stem, 1
    while glob.glob(f"{glob.escape(candidate)}-*.pth"):
        number += 1
        candidate = f"{stem}-{number}"
    return candidate


def progress_bar(total, desc, show):
    """A tqdm bar of ``total`` batches (with its ETA) when ``show`` is on and stderr is a
    terminal; otherwise a silent one, so that logs and pipes never hold bar redraws."""
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None if show else True)


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


class SplitOptimizer:
    """The run's optimizer for the dense parameters beside SparseAdam for the sparse item
    table, zeroed, stepped, saved and restored as one optimizer (RecBole's loop and the
    resume states see one).

    SparseAdam is lazy Adam: a step moves, and updates the moments of, only the rows the
    batch looked up, where dense Adam updates the whole table; with a sampled loss over a
    million items that update is most of a step's cost."""

    def __init__(self, dense, sparse):
        self.parts = {"dense": dense, "sparse": sparse}

    @property
    def param_groups(self):
        return [group for part in self.parts.values() for group in part.param_groups]

    def zero_grad(self, set_to_none=True):
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        for part in self.parts.values():
            part.step()

    def state_dict(self):
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state_dict):
        for name, part in self.parts.items():
            part.load_state_dict(state_dict[name])


def validation_metric_names(metrics, topk):
    """The result keys an evaluation with ``metrics`` and ``topk`` computes, as RecBole names
    them: ``ndcg@10`` for a metric of the top-k lists, ``gauc`` or ``auc`` for the others."""
    names = []
    for metric in metrics:
        metric = metric.lower()
        per_cutoff = {"rec.topk", "rec.items"} & set(metric_information[metric])
        names += [f"{metric}@{k}" for k in topk] if per_cutoff else [metric]
    return names


class PhasedTrainer:
    """Mixin for a RecBole ``Trainer``: resumable, timed training phases."""

    phase_order = ("train",)
    # The settings each phase reads its epoch count and learning rate from.
    EPOCH_KEYS = ("epochs",)
    LEARNING_RATE_KEYS = ("learning_rate",)
    display_name = "RecBole Trainer"  # the trainer column of the comparison tables
    # Whether the trainer's losses can leave the item table sparse gradients
    # (``sparse_item_gradients``): RecGPT's and the whole-sequence trainer's can.
    SPARSE_ITEM_GRADIENTS = False
    # Settings SparseAdam cannot honour: (key, the value it needs, what it lacks).
    SPARSE_ADAM_NEEDS = (
        ("learner", "adam", "is paired with Adam only"),
        ("weight_decay", 0.0, "has no weight decay"),
        ("clip_grad_norm", None, "gets gradients torch's clipping cannot measure"),
        ("enable_scaler", False, "is not stepped through a gradient scaler here"),
    )

    @classmethod
    def epoch_budget(cls, settings):
        """The most epochs a run with ``settings`` (a config, or a mapping over one) trains,
        all phases together."""
        return int(settings["epochs"])

    def __init__(self, config, model):
        with distributed.as_one_process(config):  # RecBole's own DDP wrapper takes CUDA devices only
            super().__init__(config, model)
        if config["single_spec"]:
            self.eval_collector = TopkCollector(config)
        else:
            self.distributed_model = distributed.wrap(model, config)
            self.eval_collector = distributed.GatheringCollector(config)
        # Every process reads the checkpoints process 0 writes: one name for all.
        self.checkpoint_stem = distributed.broadcast_object(
            checkpoint_stem(self.checkpoint_dir, config["model"], config["dataset"])
        )
        self.phases = {}
        # What the run was asked to write besides checkpoints (``result_file``: an absolute
        # path or None), kept in the resume state: ``--resume`` alone finishes the job.
        self.outputs = {}
        # The resume state this run continues from should it stop, once there is one (None
        # before): the command that continues a stopped run names it.
        self.saved_resume_file = None
        # ``fit`` ends after this phase when set: a run trained part way is resumed to the end.
        self.last_phase = None
        self.phase_name = self.phase_order[0]
        self.epoch = None
        self.resume_state = None
        self.evaluation_name = "test"  # names the evaluation bar; "<phase> epoch E valid" while validating
        self.evaluation_bar = None
        self.evaluation_share = None  # the evaluation batches this process scores
        self.evaluation_batch = 0

    @classmethod
    def check_config(cls, config):
        """Raise :class:`ConfigError` for training settings this trainer cannot honour: its
        phases' epoch counts and learning rates, the batch sizes, a ``valid_metric`` that
        validation does not compute, and ``sparse_item_gradients`` with this trainer or the
        run's optimizer."""
        for key in cls.EPOCH_KEYS:
            check_integer(key, config[key], 0)
        for key in cls.LEARNING_RATE_KEYS:
            check_positive_number(key, config[key])
        for key in ("train_batch_size", "eval_batch_size"):
            check_integer(key, config[key], 1)
        computed = validation_metric_names(config["metrics"], config["topk"])
        if str(config["valid_metric"]).lower() not in computed:
            raise ConfigError(
                f"valid_metric={config['valid_metric']} is not computed by validation (metrics and topk give "
                f"{', '.join(computed)}); choose one of those, or add its metric to metrics and its cut-off to topk"
            )
        cls.check_sparse_item_gradients(config)

    @classmethod
    def check_sparse_item_gradients(cls, config):
        """Raise :class:`ConfigError` when ``sparse_item_gradients`` cannot work with this
        trainer or with the run's optimizer settings."""
        if not config["sparse_item_gradients"]:
            return
        if not cls.SPARSE_ITEM_GRADIENTS:
            raise ConfigError(
                f"sparse_item_gradients=True is read by RecGPT's trainer and the whole-sequence trainer (SASRec, "
                f"GRU4Rec), not by this run's ({config['model']}, {cls.__name__}); set sparse_item_gradients=False"
            )
        for key, needed, lack in cls.SPARSE_ADAM_NEEDS:
            value = config[key].lower() if isinstance(config[key], str) else config[key]
            if value != needed:
                raise ConfigError(
                    f"sparse_item_gradients=True steps the item table with SparseAdam, which {lack}: "
                    f"set {key}={'~' if needed is None else needed} or sparse_item_gradients=False"
                )
        if distributed.several_processes(config):
            raise ConfigError("sparse_item_gradients=True trains in one process only; set sparse_item_gradients=False")

    def _build_optimizer(self, **kwargs):
        """RecBole's optimizer; with ``sparse_item_gradients``, a :class:`SplitOptimizer` that
        steps the sparse item table with SparseAdam and the rest with RecBole's."""
        if not self.config["sparse_item_gradients"]:
            return super()._build_optimizer(**kwargs)
        params = list(kwargs.pop("params", self.model.parameters()))
        sparse_tables = {id(m.weight) for m in self.model.modules() if isinstance(m, nn.Embedding) and m.sparse}
        sparse = [p for p in params if id(p) in sparse_tables]
        dense = super()._build_optimizer(params=[p for p in params if id(p) not in sparse_tables], **kwargs)
        if not sparse:  # RecBole's first optimizer, built before a trainer marks the table sparse
            return dense
        return SplitOptimizer(dense, torch.optim.SparseAdam(sparse, lr=kwargs.get("learning_rate", self.learning_rate)))

    @property
    def resume_file(self):
        return f"{self.checkpoint_stem}-resume.pth"

    def resume_from(self, state):
        """Continue the run that saved ``state`` (see :meth:`save_resume_state`)."""
        self.resume_state = state
        self.checkpoint_stem = state["checkpoint_stem"]
        self.phases = state["phases"]
        if os.path.exists(self.resume_file):  # else (moved?) the command given continues it
            self._saved_resume(self.resume_file)

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
            self._count_wall_time(record)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)
            self.save_resume_state(epoch_idx, phase_done=False)

        self.logger.info(f"Phase {name}: epochs {self.start_epoch}..{epochs - 1}, learning rate {learning_rate}")
        self._wall_clock = time()
        train_loader = make_loader()
        result = super().fit(train_loader, valid_data, saved=saved, callback_fn=end_of_epoch, **fit_kwargs)
        self._count_wall_time(record)
        record["checkpoint"] = self.saved_model_file if saved else None
        if not distributed.same_everywhere(self.model.state_dict()):
            # DDP averages every step's gradients, so the processes' weights never part.
            raise TrainingError(
                f"phase {name}: the processes' weights differ after training; a part of {self.config['model']} "
                "is not trained through DistributedDataParallel: train it in one process"
            )
        distributed.barrier()  # process 0 has written the phase's best checkpoint
        if saved and os.path.exists(self.saved_model_file):
            self.model.load_state_dict(read_checkpoint(self.saved_model_file, "model", self.device)["state_dict"])
        self.save_resume_state(self.epochs - 1, phase_done=True)
        return result

    def _count_wall_time(self, record):
        # Counted at every epoch's resume save, so a resumed phase keeps its killed attempts' time.
        now = time()
        record["wall_seconds"] += now - self._wall_clock
        self._wall_clock = now

    def phase_record(self):
        """Timing record of the current phase."""
        return self.phases.setdefault(
            self.phase_name,
            {"epochs": 0, "train_seconds": 0.0, "valid_seconds": 0.0, "wall_seconds": 0.0, "valid_curve": []},
        )

    def _resumes(self, name):
        return self.resume_state is not None and self.resume_state["phase"] == name

    def save_resume_state(self, epoch_idx, phase_done):
        # Each process's generators (its negatives, dropout, shuffling), for an exact resume;
        # and the resume file process 0 has saved, which the others learn of here.
        gathered = distributed.all_gather_object((rng_state(), self.saved_resume_file))
        process_rngs = [rngs for rngs, _ in gathered]
        if not distributed.is_main():
            self._saved_resume(gathered[0][1])
            return
        # The launcher hears of the file before it is written: a run stopped right after the
        # write still names it (the launcher names a file only once it exists).
        distributed.tell_launcher(resume_file=self.resume_file)
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
                "rng": process_rngs[0],
                "process_rngs": process_rngs,
                "world_size": len(process_rngs),
                "outputs": self.outputs,
                "folder": os.getcwd(),  # what its relative paths are relative to
            },
            self.resume_file,
        )
        self._saved_resume(self.resume_file)

    def _saved_resume(self, path):
        if path is not None and path != self.saved_resume_file:
            self.saved_resume_file = path
            distributed.tell_launcher(resume_file=path)  # it outlives this process to tell the user

    def _restore(self, state):
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        set_rng_state(state["process_rngs"][distributed.rank()] if "process_rngs" in state else state["rng"])
        self.logger.info(f"Resuming phase {state['phase']} after epoch {state['epoch']} from {self.resume_file}")

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not distributed.is_main():  # RecBole checks the local rank: one writer per machine
            return
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        with replace_atomically(target) as temporary:
            super()._save_checkpoint(epoch, verbose=False, saved_model_file=str(temporary), **kwargs)
        if verbose:
            self.logger.info(f"Saving current: {target}")

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.epoch = epoch_idx
        start = time()
        loss_func = loss_func or self.model.calculate_loss
        with progress_bar(len(train_data), f"{self.phase_name} epoch {epoch_idx} train", show_progress) as bar:

            def loss_and_progress(interaction):
                loss = loss_func(interaction)
                bar.update()
                return loss

            # RecBole's own bar stays off: ours names the phase.
            loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_and_progress, show_progress=False)
        record = self.phase_record()
        record["epochs"] += 1
        record["train_seconds"] += time() - start
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time()
        self.evaluation_name = f"{self.phase_name} epoch {self.epoch} valid"
        try:
            result = super()._valid_epoch(valid_data, show_progress=show_progress)
        finally:
            self.evaluation_name = "test"
        self.phase_record()["valid_seconds"] += time() - start
        return result

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return super().evaluate(eval_data, load_best_model, model_file)
        if load_best_model:
            distributed.barrier()  # process 0 has written the checkpoint
        self.evaluation_share, self.evaluation_batch = distributed.share(len(eval_data)), 0
        with progress_bar(len(self.evaluation_share), self.evaluation_name, show_progress) as self.evaluation_bar:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress=False)

    def _scores_here(self):
        """Whether this process scores the next evaluation batch (all of them, alone)."""
        index, self.evaluation_batch = self.evaluation_batch, self.evaluation_batch + 1
        return index in self.evaluation_share

    def _full_sort_batch_eval(self, batched_data):
        ranks_only = self.eval_collector.reads_top_k_only
        if not self._scores_here():
            # Another process scores these users: nothing is collected for them here.
            interaction, none = batched_data[0], torch.zeros(0, dtype=torch.long, device=self.device)
            if ranks_only:
                nothing = TopItems(none.new_zeros(0, max(self.config["topk"])), self.tot_item_num)
            else:
                nothing = torch.zeros(0, self.tot_item_num, device=self.device)
            return interaction[none.cpu()], nothing, none, none
        if ranks_only:
            # The metrics read the top-k lists alone: rank in item chunks, no [B, n_items] scores.
            interaction, history_index, positive_u, positive_i = batched_data
            interaction = interaction.to(self.device)
            excluded = excluded_lists(history_index, len(interaction))
            top = full_sort_top_k(
                self.model, interaction, max(self.config["topk"]), None if excluded is None else excluded.to(self.device)
            )
            result = interaction, TopItems(top, self.tot_item_num), positive_u, positive_i
        else:
            result = super()._full_sort_batch_eval(batched_data)
        self.evaluation_bar.update()
        return result

    def _neg_sample_batch_eval(self, batched_data):
        if not self._scores_here():
            # Another process scores these users; the result is computed for its shapes only.
            interaction, scores, positive_u, positive_i = super()._neg_sample_batch_eval(batched_data)
            none = positive_u[:0]
            return interaction[none.cpu()], scores[:0], none, positive_i[:0]
        result = super()._neg_sample_batch_eval(batched_data)
        self.evaluation_bar.update()
        return result

    def _map_reduce(self, result, num_sample):
        # The gathering collector computed the metrics over every process's users already.
        return result

    def _check_nan(self, loss):
        if not torch.isfinite(loss):
            kept = [path for path in (self.saved_model_file, self.resume_file) if os.path.exists(path)]
            raise TrainingError(
                f"phase {self.phase_name} stopped: the training loss became {loss.item()} in epoch {self.epoch}; "
                f"kept from earlier epochs: {', '.join(kept) or 'nothing (it failed in the first epoch)'}; "
                "lower the learning rate (or raise clip_grad_norm) and rerun"
            )
