"""RecGPT: Generative Personalized Prompts for Sequential Recommendation via ChatGPT Training
Paradigm. Zhang et al., DASFAA 2024 (arXiv 2404.08675).

Item ids are tokens. Phase 1 pre-trains a causal transformer to predict every next item
(``pretrain_loss``: full-softmax NLL, BCE against sampled negatives as the paper, or a
sampled loss of :mod:`recbole_recgpt.model.losses`). Phase 2 writes the model's own top
predictions into each history as prompt tokens and fine-tunes on the extended sequences
(``finetune_loss``: full-softmax NLL, or a sampled loss).
Inference is two-stage recall (:mod:`recbole_recgpt.model.recall`).
"""

import contextlib
import functools

import torch
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_recgpt.data import SEGMENT_PREFIX, TARGET_PREFIX
from recbole_recgpt.errors import ConfigError, DataError, check_choice, check_integer
from recbole_recgpt.model import losses
from recbole_recgpt.model.layers import ItemGPT, check_transformer_config
from recbole_recgpt.model.length_groups import TOKENS_PER_GROUP, scores_by_length_group
from recbole_recgpt.model.prompts import (
    PROMPT_MODES, REAL_SEGMENT, PromptBuilder, PromptMemory, history_so_far, with_tail_slots,
)
from recbole_recgpt.model.recall import TwoStageRecall, without
from recbole_recgpt.protocol import EvaluationProtocol
from recbole_recgpt.ranking import Catalogue, top_k

PROMPT_GENERATORS = ("pretrained", "current")
PRETRAIN_LOSSES = ("ce", "bce", *losses.SAMPLED_LOSSES)  # bce: the loader's negatives, unseen by the user
FINETUNE_LOSSES = losses.NEXT_ITEM_LOSSES
PROMPT_POSITIONS = ("sequence", "item")


def required_positions(max_seq_length, prompt_length, prompt_mode, prompt_positions="sequence"):
    """Position-table size the longest (prompted) sequence needs."""
    if prompt_positions == "item":
        return max_seq_length
    if prompt_mode == "insert":
        return max_seq_length * (prompt_length + 1)
    return max_seq_length + prompt_length


def check_config(config):
    """Raise :class:`ConfigError` for RecGPT parameters that cannot work together."""
    check_integer("prompt_length", config["prompt_length"], 0)
    check_integer("neg_sample_num", config["neg_sample_num"], 1)
    check_transformer_config(config)
    for key, choices in (
        ("prompt_mode", PROMPT_MODES), ("prompt_generator", PROMPT_GENERATORS), ("pretrain_loss", PRETRAIN_LOSSES),
        ("finetune_loss", FINETUNE_LOSSES), ("prompt_positions", PROMPT_POSITIONS),
    ):
        check_choice(key, config[key], choices)
    trained = {"pretrain_loss": config["pretrain_loss"]}
    if config["prompt_tuning"]:
        trained["finetune_loss"] = config["finetune_loss"]
    losses.check_config(config, trained)
    largest_k = max(config["topk"])
    if config["two_stage"]:
        if not isinstance(config["stage1_n"], int) or not 1 <= config["stage1_n"] <= largest_k:
            raise ConfigError(
                f"stage1_n={config['stage1_n']!r} must be between 1 and the largest topk ({largest_k})"
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
    if config["two_stage"]:
        if config["stage2_extension"] is not None and (
            not isinstance(config["stage2_extension"], int) or config["stage2_extension"] < 0
        ):
            raise ConfigError(f"stage2_extension={config['stage2_extension']!r} must be an integer >= 0 or ~")
        extension = stage2_extension(config)
        key = "prompt_length" if config["stage2_extension"] is None else "stage2_extension"
        if extension > config["stage1_n"]:
            raise ConfigError(
                f"{key}={extension} exceeds stage1_n={config['stage1_n']}: stage 2 appends the first "
                f"{key} stage-1 items; raise stage1_n or lower {key}"
            )
        # Token-index positions must hold the extension after the last real item; item positions never grow.
        if config["prompt_positions"] == "sequence" and extension >= (config["n_positions"] or needed):
            raise ConfigError(
                f"stage2_extension={extension} does not fit with a real item in the position table "
                f"({config['n_positions'] or needed} positions); lower it or raise n_positions"
            )


def stage2_extension(config):
    """Stage-1 items stage 2 appends: ``stage2_extension``, or the prompt length when unset."""
    return config["prompt_length"] if config["stage2_extension"] is None else config["stage2_extension"]


def item_positions(item_seq, segment_ids):
    """``[B, T] -> [B, T]``: each token's position is that of the latest real item at or
    before it, so a prompt shares the position of the item it extends."""
    real = (segment_ids == REAL_SEGMENT) & (item_seq > 0)
    return (real.cumsum(dim=1) - 1).clamp(min=0)


class RecGPT(SequentialRecommender):
    r"""GPT over item ids with personalized prompt-tuning and two-stage recall.

    Training batches (from :class:`recbole_recgpt.data.UserSequenceDataLoader`) hold whole
    user sequences: ``ITEM_SEQ`` inputs ``[B, T]``, ``TARGET_SEQ`` the next item at each
    position ``[B, T]`` (0 = padding) and, in pre-training, ``NEG_ITEM_ID`` ``[B, T, n_neg]``;
    in prompt-tuning they may come already prompted, with ``SEGMENT_SEQ`` ``[B, T]``.
    Evaluation batches are RecBole's own (history ``[B, L]`` and its length).
    """

    input_type = InputType.POINTWISE
    check_config = staticmethod(check_config)  # called by recbole_recgpt.config.create_config
    GENERATION_CHUNK = 4096  # positions scored at once when writing prompts (memory bound)
    EVAL_TOKENS_PER_GROUP = TOKENS_PER_GROUP

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        self.initializer_range = config["initializer_range"]
        self.pretrain_loss = config["pretrain_loss"]
        # Each phase's next-item loss over the supervised positions.
        item_counts = functools.partial(losses.training_item_counts, dataset)  # counted only if a loss needs them
        self.phase_losses = {
            phase: losses.next_item_loss(config[f"{phase}_loss"], config, self.n_items, item_counts)
            for phase in ("pretrain", "finetune")
        }
        self.prompt_tuning = config["prompt_tuning"]
        self.prompt_length = config["prompt_length"]
        if self.prompt_length > self.n_items - 1:  # id 0 is padding
            raise ConfigError(
                f"prompt_length={self.prompt_length} is more than the {self.n_items - 1} items of dataset "
                f"'{config['dataset']}': a prompt writes that many distinct items; lower prompt_length"
            )
        self.prompt_mode = config["prompt_mode"]
        self.prompt_generator = config["prompt_generator"]
        self.prompt_exclude_history = config["prompt_exclude_history"]
        self.supervise_prompts = config["supervise_prompts"]
        self.two_stage = config["two_stage"]
        self.stage1_n = config["stage1_n"]
        # The evaluator masks history items under this protocol; two-stage recall must then
        # fill its N stage-1 slots with items that can count. Rankings are told what to skip
        # by their caller; full_sort_predict's scores, which RecBole takes as they are, apply it here.
        self.protocol = EvaluationProtocol.from_config(config)
        self.prompt_positions = config["prompt_positions"]
        self.n_positions = config["n_positions"] or required_positions(
            self.max_seq_length, self.prompt_length, self.prompt_mode, self.prompt_positions
        )
        self.TARGET_SEQ = TARGET_PREFIX + self.ITEM_SEQ
        self.SEGMENT_SEQ = SEGMENT_PREFIX + self.ITEM_SEQ
        self.n_users = dataset.num(self.USER_ID)

        self.gpt = ItemGPT(self.n_items, self.n_positions, self.n_users, config)
        # A frozen copy of the phase-1 network writes the prompts. It is part of the
        # state dict so that a saved prompt-tuned model reloads with its prompt writer.
        self.prompt_writer = None
        if self.prompt_tuning and self.prompt_generator == "pretrained":
            self.prompt_writer = ItemGPT(self.n_items, self.n_positions, self.n_users, config)
            self.prompt_writer.requires_grad_(False)
        self.register_buffer("prompt_tuned", torch.zeros((), dtype=torch.bool))
        # What the frozen writer wrote (training sequences, then evaluation histories that
        # extend them), so each prompt is written once; forgotten with a new writer.
        self.prompt_memory = PromptMemory()
        self._writer_catalogue = None  # (the writer table's version, its Catalogue): _catalogue
        self.prompt_builder = PromptBuilder(self.prompt_length, self.prompt_mode, self.supervise_prompts)
        self.two_stage_recall = TwoStageRecall(
            self.stage1_n, stage2_extension(config), self.n_positions if self.prompt_positions == "sequence" else None
        )

        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def train(self, mode=True):
        super().train(mode)
        if self.prompt_writer is not None:
            self.prompt_writer.eval()
        return self

    def start_prompt_tuning(self):
        """Enter phase 2: freeze a copy of the current network as the prompt writer."""
        if self.prompt_writer is not None:
            self.prompt_writer.load_state_dict(self.gpt.state_dict())
        self.prompt_memory.clear()
        self.prompt_tuned.fill_(True)

    def load_pretrained_network(self, state_dict):
        """Load the network (``gpt.*``) of a saved RecGPT ``state_dict`` to start phase 2 from.

        Phase 1 trains only the first ``MAX_ITEM_LIST_LENGTH`` positions and ``n_positions``
        grows with the prompt length, so the saved position table is fitted to this model's
        (:meth:`fit_position_table`) and one phase-1 network serves phase-2 runs of any prompt
        length. Every other tensor must have this model's shape: ``ValueError`` names the first
        that does not."""
        prefix = "gpt."
        network = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        expected = self.gpt.state_dict()
        network["position_embedding.weight"] = self.fit_position_table(
            network.get("position_embedding.weight"), expected["position_embedding.weight"]
        )
        for key, value in expected.items():
            if key not in network or network[key].shape != value.shape:
                found = tuple(network[key].shape) if key in network else "nothing"
                raise ValueError(f"{key} has shape {found}, this run needs {tuple(value.shape)}")
        self.gpt.load_state_dict(network)

    def fit_position_table(self, saved, own):
        """``[P_saved, H]`` saved position table -> this model's ``[P, H]``: the rows both
        have, then this model's initial rows. Returned as saved when it cannot serve (another
        width, or fewer rows than the ``max_seq_length`` positions phase 1 trains)."""
        if saved is None or saved.shape[1] != own.shape[1] or min(len(saved), len(own)) < self.max_seq_length:
            return saved
        table = own.clone()
        rows = min(len(saved), len(own))
        table[:rows] = saved[:rows]
        return table

    def load_state_dict(self, state_dict, strict=True, assign=False):
        # A new prompt writer writes other prompts: forget the ones written. Reloading the same
        # writer (the best checkpoint of the phase, before the test) keeps them.
        if not self._same_prompt_writer(state_dict):
            self.prompt_memory.clear()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _same_prompt_writer(self, state_dict):
        if self.prompt_writer is None:
            return False
        prefix = "prompt_writer."
        own = self.prompt_writer.state_dict()
        given = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        return given.keys() == own.keys() and all(
            given[key].shape == value.shape and torch.equal(given[key].to(value.device), value) for key, value in own.items()
        )

    def forward(self, item_seq, segment_ids=None, user_ids=None, network=None):
        """``[B, T]`` tokens (and segments) -> ``[B, T, H]`` causal hidden states."""
        network = network or self.gpt
        if segment_ids is None:
            segment_ids = torch.zeros_like(item_seq)
        return network(item_seq, segment_ids, self.get_attention_mask(item_seq), user_ids,
                       self.position_ids(item_seq, segment_ids))

    def position_ids(self, item_seq, segment_ids):
        """``[B, T]`` positions of the tokens, or None for their indices (``prompt_positions``)."""
        return item_positions(item_seq, segment_ids) if self.prompt_positions == "item" else None

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        target_seq = interaction[self.TARGET_SEQ]
        user_ids = interaction[self.USER_ID]
        if not self.prompt_tuned:
            # Only bce reads the loader's negatives; the sampled losses draw their own.
            negatives = interaction[self.NEG_ITEM_ID] if self.pretrain_loss == "bce" else None
            return self.next_item_loss(self.phase_losses["pretrain"], item_seq, None, target_seq, user_ids, negatives)
        if self.SEGMENT_SEQ in interaction:
            # Already prompted by the loader (a frozen writer's prompts are written once).
            segment_ids = interaction[self.SEGMENT_SEQ]
        else:
            batch = self.prompted_training_batch(item_seq, interaction[self.ITEM_SEQ_LEN], target_seq, user_ids)
            item_seq, segment_ids, target_seq = batch.item_seq, batch.segment_ids, batch.target_seq
        return self.next_item_loss(self.phase_losses["finetune"], item_seq, segment_ids, target_seq, user_ids)

    def next_item_loss(self, loss, item_seq, segment_ids, target_seq, user_ids, negatives=None):
        """``loss`` (:mod:`recbole_recgpt.model.losses`) of every supervised position's target
        (``target_seq > 0``): ``[B, T]`` tokens -> scalar. ``negatives``: ``[B, T, n]``."""
        hidden = self.forward(item_seq, segment_ids, user_ids)
        supervised = target_seq > 0
        return loss(
            hidden[supervised], target_seq[supervised], self.gpt.item_embedding,
            None if negatives is None else negatives[supervised],
        )

    def prompted_training_batch(self, item_seq, item_seq_len, target_seq, user_ids):
        """Training inputs ``[B, T]`` -> their prompt-extended :class:`PromptedBatch`."""
        # A loader writing its prompts hands over its own (CPU) rows: RecBole's trainer moves
        # only the batches it trains on to the model's device.
        item_seq, item_seq_len, target_seq, user_ids = (
            field.to(self.device) for field in (item_seq, item_seq_len, target_seq, user_ids)
        )
        return self.prompt_builder.for_training(self._prompt_generator(user_ids), item_seq, item_seq_len, target_seq)

    def _prompt_generator(self, user_ids):
        """What writes the prompts of these users' rows: a frozen writer's are remembered
        (:class:`PromptMemory`), the current network's change with every step."""
        if self.prompt_writer is None:
            return self._generator(user_ids)
        return self.prompt_memory.generator(self._generator, user_ids)

    def _generator(self, user_ids):
        """The prompt writer as a generator for :class:`PromptBuilder` (no dropout)."""
        network = self.prompt_writer or self.gpt

        def top_next_items(item_seq, segment_ids, mask, k):
            with _evaluation_mode(network):
                hidden = self.forward(item_seq, segment_ids, user_ids, network)[mask]
            excluded = history_so_far(item_seq, mask) if self.prompt_exclude_history else None
            catalogue = self._catalogue(network)
            # Positions in chunks too: their histories (``excluded``) are [positions, T] each.
            written = []
            for start in range(0, hidden.size(0), self.GENERATION_CHUNK):
                chunk = slice(start, start + self.GENERATION_CHUNK)
                written.append(top_k(hidden[chunk], catalogue, k, None if excluded is None else excluded[chunk]))
            return torch.cat(written)

        return top_next_items

    def _catalogue(self, network):
        """``network``'s item table as rankings scan it (:class:`Catalogue`). The frozen
        writer's is kept from batch to batch: its norm order is a sort and copy of the table
        (0.5 s at 10^6 items), and a training phase writes the prompts of hundreds of batches.
        Nothing trains the writer, and what gives it new weights (the copy at the start of
        prompt-tuning, a checkpoint) changes the table's version counter or its storage, so
        the kept one is made again then. The trained network's weights change at every step:
        its catalogue serves one batch."""
        table = network.item_embedding.weight
        if network is not self.prompt_writer:
            return Catalogue(table)
        version = (table.data_ptr(), table._version, table.device)
        if self._writer_catalogue is None or self._writer_catalogue[0] != version:
            self._writer_catalogue = (version, Catalogue(table))
        return self._writer_catalogue[1]

    def _states_at(self, user_ids):
        """``state_at(item_seq, segment_ids, index) -> [B, H]``: the hidden state at ``index``
        (``[B]``) of each row, which scores the next item (:class:`_PrefixReusingStates`)."""
        return _PrefixReusingStates(self, user_ids)

    @property
    def final_inference(self):
        """Whether prompts / two-stage recall apply now: in the model's last phase only.

        Phase 1 of a prompt-tuning run is validated on plain next-item ranking, the job it
        is trained for; without prompt-tuning, phase 1 is the final model.
        """
        return bool(self.prompt_tuned) or not self.prompt_tuning

    def full_sort_predict(self, interaction):
        """History ``[B, L]`` -> scores ``[B, n_items]`` (two-stage order when enabled;
        history items at -inf under ``eval_mask_history``). Rankings (evaluation,
        recommendations) use :meth:`full_sort_top_k`, whose memory does not grow with the
        catalogue; these scores serve ``predict`` and metrics that read every score.
        """
        def score_group(batch, state_at, excluded):
            def score_at(item_seq, segment_ids, index):
                return self.gpt.item_scores(state_at(item_seq, segment_ids, index))

            if self.two_stage and self.final_inference:
                return self.two_stage_recall(score_at, batch, excluded)
            return without(score_at(batch.item_seq, batch.segment_ids, batch.last_item_index), excluded)

        return self._by_length_group(interaction, score_group, self.protocol.excluded(interaction[self.ITEM_SEQ]))

    def full_sort_top_k(self, interaction, k, excluded=None):
        """History ``[B, L]`` -> the ``k`` best items ``[B, k]``, best first: the two-stage list
        when enabled, never one of ``excluded`` (``[B, E]``, 0 = none: what the caller's
        evaluation protocol skips, as for every model; both recall stages skip them). The
        catalogue is scored in chunks (:func:`recbole_recgpt.ranking.top_k`).
        """
        catalogue = self._catalogue(self.gpt)  # one norm order for every group and stage

        def rank_group(batch, state_at, group_excluded):
            def rank_at(item_seq, segment_ids, index, n, skipped):
                return top_k(state_at(item_seq, segment_ids, index), catalogue, n, skipped)

            if self.two_stage and self.final_inference:
                return self.two_stage_recall.top_k(rank_at, batch, k, group_excluded)
            return rank_at(batch.item_seq, batch.segment_ids, batch.last_item_index, k, group_excluded)

        return self._by_length_group(interaction, rank_group, excluded)

    def _by_length_group(self, interaction, rank_group, excluded=None):
        """``rank_group(batch, state_at, excluded) -> [rows, X]`` of each group of users of
        similar history length, assembled to ``[B, X]``.

        Each group is trimmed to its longest history: causal attention makes trailing padding
        inert, so this changes no score and spends no compute on padding. ``batch`` is the
        group's prompted :class:`PromptedBatch`, ``excluded`` the rows of ``excluded``
        (``[B, E]`` or None): what its rankings skip.
        """
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = interaction[self.ITEM_SEQ]
        user_ids = interaction[self.USER_ID]
        if (item_seq_len < 1).any():
            raise DataError(
                f"{int((item_seq_len < 1).sum())} user(s) have an empty history; RecGPT predicts from at least "
                "one item: drop such rows before scoring"
            )

        def group(rows, width):
            history, lengths, users = item_seq[rows, :width], item_seq_len[rows], user_ids[rows]
            return rank_group(
                self._inference_batch(history, lengths, users), self._states_at(users),
                None if excluded is None else excluded[rows],
            )

        return scores_by_length_group(group, item_seq_len, self.EVAL_TOKENS_PER_GROUP)

    def _inference_batch(self, item_seq, item_seq_len, user_ids):
        """Histories ``[B, L]`` -> the :class:`PromptedBatch` the model ranks from: prompted once
        prompt-tuned, with tail slots for two-stage recall's extension."""
        if not self.prompt_tuned:
            return with_tail_slots(item_seq, item_seq_len, self.prompt_length)
        return self.prompt_builder.for_inference(self._prompt_generator(user_ids), item_seq, item_seq_len)

    def predict(self, interaction):
        """Score of ``ITEM_ID`` for each row, read off the full-sort scores: ``[B]``."""
        scores = self.full_sort_predict(interaction)
        return scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)


class _PrefixReusingStates:
    """``state_at(item_seq, segment_ids, index) -> [B, H]`` for one group of users that reuses
    its last pass for a sequence which appends tokens after each row's last ``index``.

    Stage 2 of two-stage recall is such a sequence: stage 1's items written after the last real
    item, everything before it unchanged. Under causal attention the earlier tokens' states do
    not depend on what follows, so only the appended tokens go through the transformer
    (:meth:`ItemGPT.continue_from`). Reuse is decided from the tokens themselves (every row's
    prefix identical, the same number appended), so any other sequence gets a whole pass.
    """

    def __init__(self, model, user_ids):
        self.model, self.user_ids, self.last_pass = model, user_ids, None

    def __call__(self, item_seq, segment_ids, index):
        appended = self._appended(item_seq, segment_ids, index)
        if appended:
            return self._continue(item_seq, segment_ids, appended)
        model = self.model
        hidden, states = model.gpt.states_at(
            item_seq, segment_ids, model.get_attention_mask(item_seq), index, self.user_ids,
            model.position_ids(item_seq, segment_ids),
        )
        self.last_pass = item_seq, segment_ids, index, states
        return hidden

    def _appended(self, item_seq, segment_ids, index):
        """How many tokens every row appends after the last pass's index onto an unchanged
        prefix; 0 when not all rows append the same number (>= 1) so."""
        if self.last_pass is None:
            return 0
        earlier_seq, earlier_segments, earlier_index, _ = self.last_pass
        appended = index - earlier_index
        if len(index) != len(earlier_index) or not len(index):
            return 0
        if not (appended == appended[0]).all() or int(appended[0]) < 1:
            return 0
        width = min(earlier_seq.size(1), item_seq.size(1))
        prefix = torch.arange(width, device=index.device) <= earlier_index.unsqueeze(1)
        same = (earlier_seq[:, :width] == item_seq[:, :width]) & (earlier_segments[:, :width] == segment_ids[:, :width])
        return int(appended[0]) if bool((same | ~prefix).all()) else 0

    def _continue(self, item_seq, segment_ids, appended):
        earlier_seq, _, earlier_index, states = self.last_pass
        places = earlier_index.unsqueeze(1) + 1 + torch.arange(appended, device=item_seq.device)
        positions = self.model.position_ids(item_seq, segment_ids)
        seen = (torch.arange(earlier_seq.size(1), device=item_seq.device) <= earlier_index.unsqueeze(1)) & (earlier_seq > 0)
        hidden = self.model.gpt.continue_from(
            states, seen, item_seq.gather(1, places), segment_ids.gather(1, places),
            places if positions is None else positions.gather(1, places), self.user_ids,
        )
        return hidden[:, -1]


@contextlib.contextmanager
def _evaluation_mode(module):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
