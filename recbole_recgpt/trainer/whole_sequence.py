"""The baselines' opt-in whole-sequence trainer: RecBole's (prefix, next item) pairs, one pass per user."""

import torch

from recbole.trainer import Trainer

from recbole_recgpt.data import TARGET_PREFIX, UserSequenceDataLoader
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.trainer.phased import PhasedTrainer


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
        self.check_config(config)
        super().__init__(config, model)
        self.all_positions_module = getattr(model, self.ALL_POSITIONS_MODULE[config["model"]])

    @classmethod
    def check_config(cls, config):
        """Raise :class:`ConfigError` unless the run's model is one this trainer supports."""
        if config["model"] not in cls.ALL_POSITIONS_MODULE or config["loss_type"] != "CE":
            raise ConfigError(
                f"baseline_trainer=whole_sequence supports {' and '.join(cls.ALL_POSITIONS_MODULE)} with "
                f"loss_type CE, not {config['model']}; use baseline_trainer=recbole"
            )

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
