"""The baselines' whole-sequence trainer (their default): one row per user sequence instead
of RecBole's one padded row per prefix."""

import contextlib
import functools
import random

import torch
import torch.nn.functional as F

from recbole.data.interaction import Interaction
from recbole.trainer import Trainer

from recbole_recgpt.data import TARGET_PREFIX, UserSequenceDataLoader
from recbole_recgpt.errors import ConfigError, check_choice
from recbole_recgpt.model import losses
from recbole_recgpt.model.length_groups import TOKENS_PER_GROUP, scores_by_length_group
from recbole_recgpt.trainer.phased import PhasedTrainer


class WholeSequenceTrainer(PhasedTrainer, Trainer):
    r"""The baselines' default trainer (``baseline_trainer: auto`` or ``whole_sequence``) for
    RecBole's SASRec and GRU4Rec (``loss_type`` CE or BPR) and BERT4Rec.

    *Causal models* (SASRec, GRU4Rec): RecBole feeds them one padded row per prefix. Their
    output at position t of one pass over the whole sequence already is that row's output
    (causal attention, a left-to-right GRU), so this trainer feeds whole user sequences, reads
    the output at every position through a forward hook on the model's own layer, and averages
    the loss over all (prefix, next item) pairs: the same pairs and loss as RecBole's rows
    (BPR: one sampled negative per pair, unseen by the user), without the padded recomputation.
    With ``one_negative_loss: bce`` that negative enters the paper's SASRec loss instead
    (S3-Rec's binary cross-entropy, ``-log sigmoid(pos) - log(1 - sigmoid(neg))``), which
    RecBole's SASRec does not offer. With ``loss_type: CE``, ``baseline_loss`` replaces the
    full softmax by a sampled loss (``sampled_softmax``, ``gbce``). Every one of these losses
    is :mod:`recbole_recgpt.model.losses`', RecGPT's too.

    *BERT4Rec* is bidirectional, so one pass does not give its per-prefix outputs. It gets one
    row per user sequence per epoch, masked afresh each epoch by RecBole's own rule
    (``MaskItemSequence``: each item masked with ``mask_ratio``, at most ``mask_ratio *
    MAX_ITEM_LIST_LENGTH`` masks, the latest kept; with probability ``ft_ratio`` a batch masks
    only each row's last item), then the model's loss (:meth:`cloze_loss`). That is how the
    original BERT4Rec trains; RecBole instead masks every prefix row, so an epoch here holds
    fewer, longer samples (one per user instead of one per interaction).

    Evaluation is RecBole's, except that users are scored in groups of similar history length,
    each trimmed to its longest history (trailing padding is inert in all three models: the
    same scores, without the compute RecBole spends on padding to MAX_ITEM_LIST_LENGTH).
    """

    # The module whose output holds every position's sequence representation [B, T, H].
    ALL_POSITIONS_MODULE = {"SASRec": "trm_encoder", "GRU4Rec": "dense"}
    CLOZE_MODELS = ("BERT4Rec",)
    LOSS_TYPES = ("CE", "BPR")
    ONE_NEGATIVE_LOSSES = ("bpr", "bce")
    BASELINE_LOSSES = losses.NEXT_ITEM_LOSSES
    SPARSE_ITEM_GRADIENTS = True
    EVAL_TOKENS_PER_GROUP = TOKENS_PER_GROUP
    display_name = "whole-sequence"

    def __init__(self, config, model):
        self.check_config(config)
        super().__init__(config, model)
        if config["model"] in self.CLOZE_MODELS:
            self.loss = self.cloze_loss
        else:
            self.loss = self.whole_sequence_loss
            self.all_positions_module = getattr(model, self.ALL_POSITIONS_MODULE[config["model"]])
            self.next_item_loss = None  # built from the training data (its catalogue and counts) on first use
            # RecBole builds the table; gradients to the looked-up rows only (sampled losses).
            model.item_embedding.sparse = config["sparse_item_gradients"]

    # Keys only this trainer reads: (the value a run of another trainer must leave, the
    # loss_type they go with).
    OWN_LOSS_KEYS = {"one_negative_loss": ("bpr", "BPR"), "baseline_loss": ("ce", "CE")}

    @classmethod
    def check_not_set_elsewhere(cls, config, trainer):
        """Raise :class:`ConfigError` when a run of another ``trainer`` sets a loss key only this
        trainer reads (it would be ignored silently)."""
        if trainer is cls:
            return
        for key, (default, loss_type) in cls.OWN_LOSS_KEYS.items():
            if config[key] != default:
                own = getattr(trainer, "LOSS_KEYS", ())
                raise ConfigError(
                    f"{key}={config[key]!r} is a loss of the whole-sequence trainer, which this run "
                    f"({config['model']}, baseline_trainer={config['baseline_trainer']}) does not use; "
                    f"use baseline_trainer=auto with SASRec or GRU4Rec and loss_type={loss_type}"
                    + (f" ({config['model']}'s losses are {' and '.join(own)})" if own else "")
                )

    @classmethod
    def supports(cls, config):
        """Whether this trainer can train the run's model with its loss."""
        return config["model"] in (*cls.ALL_POSITIONS_MODULE, *cls.CLOZE_MODELS) and config["loss_type"] in cls.LOSS_TYPES

    @classmethod
    def check_config(cls, config):
        """Raise :class:`ConfigError` unless the run's model is one this trainer supports."""
        if not cls.supports(config):
            supported = (*cls.ALL_POSITIONS_MODULE, *cls.CLOZE_MODELS)
            raise ConfigError(
                f"baseline_trainer=whole_sequence supports {', '.join(supported)} with loss_type "
                f"{' or '.join(cls.LOSS_TYPES)}, not {config['model']} ({config['loss_type']}); use baseline_trainer=recbole"
            )
        one_negative_loss = config["one_negative_loss"]
        check_choice("one_negative_loss", one_negative_loss, cls.ONE_NEGATIVE_LOSSES)
        if one_negative_loss == "bce" and (config["model"] not in cls.ALL_POSITIONS_MODULE or config["loss_type"] != "BPR"):
            raise ConfigError(
                f"one_negative_loss=bce needs loss_type=BPR (one sampled negative) and SASRec or GRU4Rec, "
                f"not {config['model']} with loss_type={config['loss_type']}"
            )
        baseline_loss = config["baseline_loss"]
        check_choice("baseline_loss", baseline_loss, cls.BASELINE_LOSSES)
        if baseline_loss != "ce" and (config["model"] not in cls.ALL_POSITIONS_MODULE or config["loss_type"] != "CE"):
            raise ConfigError(
                f"baseline_loss={baseline_loss} replaces the full softmax of loss_type=CE in SASRec or GRU4Rec, "
                f"not {config['model']} with loss_type={config['loss_type']}; set baseline_loss=ce"
            )
        if config["model"] in cls.CLOZE_MODELS:
            if config["sparse_item_gradients"]:
                raise ConfigError(
                    f"sparse_item_gradients=True needs a loss of SASRec or GRU4Rec that scores some items only; "
                    f"{config['model']} keeps its own loss: set sparse_item_gradients=False"
                )
        elif config["loss_type"] == "BPR":
            losses.check_config(config, {"one_negative_loss": one_negative_loss})
        else:
            losses.check_config(config, {"baseline_loss": baseline_loss})
        super().check_config(config)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        dataset = train_data.dataset
        if self.loss == self.whole_sequence_loss:
            self.use_training_data(dataset)
        negatives = 1 if self.config["loss_type"] == "BPR" else 0
        return self.run_phase(
            "train", lambda: UserSequenceDataLoader(self.config, dataset, neg_sample_num=negatives),
            self.config["epochs"], self.config["learning_rate"], valid_data=valid_data, verbose=verbose,
            saved=saved, show_progress=show_progress, callback_fn=callback_fn,
        )

    def _full_sort_batch_eval(self, batched_data):
        if self.eval_collector.reads_top_k_only:  # ranked by length group in recbole_recgpt.ranking
            return super()._full_sort_batch_eval(batched_data)
        with length_grouped_scoring(self.model, self.EVAL_TOKENS_PER_GROUP):
            return super()._full_sort_batch_eval(batched_data)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        return super()._train_epoch(train_data, epoch_idx, loss_func=self.loss, show_progress=show_progress)

    def whole_sequence_loss(self, interaction):
        """Mean loss over every (prefix, next item) pair of the batch's sequences."""
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
        # BPR and one_negative_loss take the loader's negative, unseen by the user.
        negatives = interaction[model.NEG_ITEM_ID][supervised] if self.config["loss_type"] == "BPR" else None
        if self.next_item_loss is None:  # called before fit
            self.use_training_data()
        return self.next_item_loss(hidden[supervised], target_seq[supervised], model.item_embedding, negatives)

    def use_training_data(self, dataset=None):
        """Build the run's next-item loss; popularity sampling reads the item counts of the
        training split ``dataset`` (``None``: no counts, enough for every other loss)."""
        config = self.config
        name = config["one_negative_loss"] if config["loss_type"] == "BPR" else config["baseline_loss"]
        counts = None if dataset is None else functools.partial(losses.training_item_counts, dataset)
        self.next_item_loss = losses.next_item_loss(name, config, self.model.n_items, counts)

    def cloze_loss(self, interaction):
        """BERT4Rec's loss on :meth:`cloze_batch` of the batch's sequences.

        CE: RecBole's value, with the logits computed for the masked slots that count only.
        RecBole scores every slot of ``[B, M]`` against all items and zeroes the empty ones;
        most rows fill a few of their M slots, so that output layer, the bulk of an epoch's
        time, is mostly thrown away. BPR: the model's own ``calculate_loss``.
        """
        model = self.model
        batch = self.cloze_batch(interaction)
        if self.config["loss_type"] != "CE":
            return model.calculate_loss(batch)
        index = batch[model.MASK_INDEX]
        counted = index > 0  # RecBole's rule: a slot counts when its position is not 0
        rows = counted.nonzero(as_tuple=True)[0]
        hidden = model.forward(batch[model.MASK_ITEM_SEQ])[rows, index[counted]]  # [N, H]
        logits = hidden @ model.item_embedding.weight[: model.n_items].t() + model.output_bias
        return F.cross_entropy(logits, batch[model.POS_ITEMS][counted])

    def cloze_batch(self, interaction):
        """Whole sequences ``[B, W]`` masked by RecBole's ``MaskItemSequence`` rule, in its
        fields: the masked sequence, and ``[B, M]`` masked positions, their items and (BPR)
        negatives, right-aligned with 0 as padding."""
        model, config = self.model, self.config
        sequences = self.whole_sequences(interaction)  # [B, W]
        lengths = (sequences > 0).sum(dim=1)
        width = sequences.size(1)
        slots = int(config["mask_ratio"] * config["MAX_ITEM_LIST_LENGTH"])
        device = sequences.device
        real = torch.arange(width, device=device) < lengths.unsqueeze(1)
        if random.random() < config["ft_ratio"]:
            chosen = torch.zeros_like(real)
            chosen[torch.arange(len(lengths), device=device), lengths - 1] = True
        else:
            chosen = (torch.rand(real.shape, device=device) < config["mask_ratio"]) & real
            # Keep the latest `slots` masks of a row (RecBole truncates from the front).
            chosen &= chosen.flip(1).cumsum(1).flip(1) <= slots
        rows, cols = chosen.nonzero(as_tuple=True)
        slot = slots - chosen.sum(1, keepdim=True) + chosen.cumsum(1) - 1  # [B, W]
        index = torch.zeros(len(lengths), slots, dtype=torch.long, device=device)
        items = torch.zeros_like(index)
        index[rows, slot[rows, cols]] = cols
        items[rows, slot[rows, cols]] = sequences[rows, cols]
        negatives = torch.zeros_like(index)
        if config["loss_type"] == "BPR":
            sampled = interaction[model.NEG_ITEM_ID][..., 0]  # [B, T], unseen by each user
            negatives[rows, slot[rows, cols]] = sampled[rows, cols.clamp(max=sampled.size(1) - 1)]
        return Interaction({
            model.MASK_ITEM_SEQ: sequences.masked_fill(chosen, model.mask_token),
            model.POS_ITEMS: items, model.NEG_ITEMS: negatives, model.MASK_INDEX: index,
        })

    def whole_sequences(self, interaction):
        """``[B, W]`` each row's whole window (inputs plus the last target), its latest
        ``MAX_ITEM_LIST_LENGTH`` items, left-aligned as RecBole's histories are."""
        model = self.model
        item_seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        targets = interaction[TARGET_PREFIX + model.ITEM_SEQ]
        rows = torch.arange(len(lengths), device=lengths.device)
        sequences = F.pad(item_seq, (0, 1))
        sequences[rows, lengths] = targets[rows, lengths - 1]
        too_long = lengths + 1 > self.config["MAX_ITEM_LIST_LENGTH"]
        sequences[too_long] = sequences[too_long].roll(-1, dims=1)
        sequences[too_long, -1] = 0
        return sequences[:, : self.config["MAX_ITEM_LIST_LENGTH"]]


@contextlib.contextmanager
def length_grouped_scoring(model, tokens_per_group):
    """Inside, a RecBole sequential model's ``full_sort_predict`` scores its users in length groups
    (:func:`recbole_recgpt.model.length_groups.scores_by_length_group`)."""
    full_sort_predict = model.full_sort_predict

    def grouped(interaction):
        item_seq = interaction[model.ITEM_SEQ]

        def score_group(rows, width):
            group = interaction[rows]
            group[model.ITEM_SEQ] = item_seq[rows, :width]
            return full_sort_predict(group)

        return scores_by_length_group(score_group, interaction[model.ITEM_SEQ_LEN], tokens_per_group)

    model.full_sort_predict = grouped
    try:
        yield
    finally:
        del model.full_sort_predict
