"""Personalized prompts: a generator writes its own next-item predictions into a history.

A *generator* is any callable ``generator(item_seq, segment_ids, mask, k) -> items`` that,
for right-padded ``item_seq``/``segment_ids`` of shape ``[B, T]`` and a boolean ``mask`` of
shape ``[B, T]``, returns its ``k`` best next items ``[mask.sum(), k]`` (best first) at the
masked positions in row-major order; one causal pass gives all of them. Item id 0 is padding
and is never a prompt.
"""

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

REAL_SEGMENT = 0
PROMPT_SEGMENT = 1
PROMPT_MODES = ("insert", "replace_tail")  # checked with the model's other parameters


@dataclass
class PromptedBatch:
    """Sequences ready for the transformer.

    item_seq, segment_ids: ``[B, T]`` right-padded tokens and their segments.
    target_seq: ``[B, T]`` next real item each position is trained on, 0 = unsupervised
        (``None`` at inference).
    last_item_index: ``[B]`` position of the last real history item.
    tail_length: number of free slots right after the last real item (inference only), where
        two-stage recall writes the last item's extension.
    """

    item_seq: torch.Tensor
    segment_ids: torch.Tensor
    target_seq: Optional[torch.Tensor]
    last_item_index: torch.Tensor
    tail_length: int = 0


def history_so_far(item_seq, mask):
    """``[B, T]`` tokens and ``[B, T]`` mask -> ``[mask.sum(), T]``: for each masked position
    (row-major), the row's tokens up to and including it, 0 after it."""
    rows, positions = mask.nonzero(as_tuple=True)
    upto = torch.arange(item_seq.size(1), device=item_seq.device) <= positions.unsqueeze(1)
    return item_seq[rows] * upto


class PromptBuilder:
    """Extends histories with generated prompt tokens (segment 1).

    ``insert`` (the paper): after every real item ``i_s`` the generator's top
    ``prompt_length`` next items ``p_s^1..p_s^K`` are inserted, all from one causal pass over
    the history: ``i_1, p_1^1..p_1^K, i_2, ..., i_t, p_t^1..p_t^K``. Every position of block
    ``s`` is trained on the real next item ``i_{s+1}``.

    ``replace_tail`` (the reference code's default): the last ``prompt_length`` inputs are
    replaced by items generated greedily (top-1, one step at a time) after the remaining
    prefix; each generated token keeps the target of the item it replaced. At inference the
    history is left as it is.

    ``supervise_prompts=False`` leaves prompt positions without a target.
    """

    def __init__(self, prompt_length, prompt_mode="insert", supervise_prompts=True):
        self.prompt_length = prompt_length
        self.prompt_mode = prompt_mode
        self.supervise_prompts = supervise_prompts

    @torch.no_grad()
    def for_training(self, generator, item_seq, item_seq_len, target_seq):
        """Inputs ``[B, T]`` with their next items ``[B, T]`` -> :class:`PromptedBatch`."""
        if self.prompt_mode == "insert":
            return self._insert(generator, item_seq, item_seq_len, target_seq)
        return self._replace_tail(generator, item_seq, item_seq_len, target_seq)

    @torch.no_grad()
    def for_inference(self, generator, item_seq, item_seq_len):
        """Histories ``[B, T]`` -> :class:`PromptedBatch` with ``prompt_length`` tail slots."""
        if self.prompt_mode == "insert":
            # The last block's prompts would sit in the tail slots, after the hidden state at the
            # last real item (causality keeps them out of it), where stage 2 writes its extension
            # and nothing reads what follows: they are left empty, not written.
            return self._insert(generator, item_seq, item_seq_len, None)
        return with_tail_slots(item_seq, item_seq_len, self.prompt_length)

    def _insert(self, generator, item_seq, item_seq_len, target_seq):
        batch_size, seq_len = item_seq.shape
        block = self.prompt_length + 1
        real = _valid_mask(item_seq_len, seq_len)
        # Training supervises every block; inference (no targets) never reads the last one's prompts.
        written = real if target_seq is not None else _valid_mask(item_seq_len - 1, seq_len)
        segments = torch.full_like(item_seq, REAL_SEGMENT)
        prompts = item_seq.new_zeros(batch_size, seq_len, self.prompt_length)
        if self.prompt_length and written.any():
            prompts[written] = generator(item_seq, segments, written, self.prompt_length)

        def interleave(real_part, prompt_part):
            return torch.cat([real_part.unsqueeze(-1), prompt_part], dim=-1).reshape(
                batch_size, seq_len * block
            )

        prompt_segments = torch.where(written, PROMPT_SEGMENT, REAL_SEGMENT)
        extended_segments = interleave(segments, prompt_segments.unsqueeze(-1).expand_as(prompts))
        extended_targets = None
        if target_seq is not None:
            prompt_targets = target_seq.unsqueeze(-1).expand_as(prompts)
            if not self.supervise_prompts:
                prompt_targets = torch.zeros_like(prompt_targets)
            extended_targets = interleave(target_seq, prompt_targets)
        return PromptedBatch(
            item_seq=interleave(item_seq, prompts),
            segment_ids=extended_segments,
            target_seq=extended_targets,
            last_item_index=(item_seq_len - 1) * block,
            tail_length=self.prompt_length,
        )

    def _replace_tail(self, generator, item_seq, item_seq_len, target_seq):
        item_seq = item_seq.clone()
        segments = torch.full_like(item_seq, REAL_SEGMENT)
        target_seq = target_seq.clone()
        # At least one real item must remain to generate from.
        tail = torch.clamp(item_seq_len - 1, max=self.prompt_length)
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        for step in range(self.prompt_length):
            active = step < tail
            if not active.any():
                break
            position = item_seq_len - tail + step
            mask = torch.zeros_like(item_seq, dtype=torch.bool)
            mask[rows[active], position[active] - 1] = True
            next_item = generator(item_seq, segments, mask, 1).squeeze(-1)
            item_seq[rows[active], position[active]] = next_item
            segments[rows[active], position[active]] = PROMPT_SEGMENT
            if not self.supervise_prompts:
                target_seq[rows[active], position[active]] = 0
        return PromptedBatch(
            item_seq=item_seq,
            segment_ids=segments,
            target_seq=target_seq,
            last_item_index=item_seq_len - 1,
        )


class PromptMemory:
    """What a frozen prompt writer wrote, per user, so that no prompt is computed twice.

    The prompts at a position depend only on the user and the tokens (with their segments) up
    to that position: the writer is causal and never changes. A history that extends one
    already written therefore reuses the prompts of their common prefix and writes only the
    positions after it. Validation's history is a training sequence plus its last target and
    the test's is validation's plus one item, so after the training prompts are written a
    first validation writes nothing and a test writes one position per user. Top-K over the
    catalogue at every position is what writing costs, so this is most of an evaluation's
    work on a large catalogue.

    One history per user (and prompt count ``k``) is kept: the last one written, unless it is
    a prefix of the one kept. Kept as tensors indexed by user id on the histories' device, so
    a batch is looked up and stored without leaving it.
    """

    def __init__(self):
        self._kept = {}  # k -> _WrittenRows

    def __len__(self):
        return sum(int((rows.length > 0).sum()) for rows in self._kept.values())

    def clear(self):
        self._kept.clear()

    def generator(self, make_generator, user_ids):
        """A generator (module docstring) for rows of ``user_ids`` (``[B]``) that answers from
        memory where it can and asks ``make_generator(user_ids)`` for the rest."""
        if user_ids is None:  # nothing to keep histories under
            return make_generator(None)
        return functools.partial(self._write, make_generator, user_ids)

    def _write(self, make_generator, user_ids, item_seq, segment_ids, mask, k):
        kept = self._kept.get(k)
        if kept is None or kept.length.device != item_seq.device:  # first use, or the model moved
            kept = self._kept[k] = _WrittenRows(k, item_seq.device)
        kept.fit(int(user_ids.max()) + 1, item_seq.size(1))
        width = item_seq.size(1)
        tokens, segments = kept.tokens[user_ids, :width], kept.segments[user_ids, :width]
        # Positions before the first difference hold the kept history's tokens: their prompts are its.
        common = ((tokens == item_seq) & (segments == segment_ids)).long().cumprod(dim=1).sum(dim=1)
        in_common = torch.arange(width, device=item_seq.device) < common.unsqueeze(1)
        known = kept.known[user_ids, :width] & in_common
        prompts = kept.prompts[user_ids, :width]  # a copy [B, T, k], valid where known
        missing = mask & ~known
        rows = missing.any(dim=1).nonzero().squeeze(1)
        if len(rows):
            written = make_generator(user_ids[rows])(item_seq[rows], segment_ids[rows], missing[rows], k)
            block = prompts[rows]
            block[missing[rows]] = written
            prompts[rows] = block
            kept.store(user_ids, item_seq, segment_ids, common, known, missing, prompts)
        return prompts[mask]


class _WrittenRows:
    """The kept histories of one prompt count ``k``, row ``u`` for user ``u``: ``tokens``,
    ``segments`` ``[U, T]`` (0-padded), ``length`` ``[U]`` (0: none kept), and the prompts
    ``[U, T, k]`` written at the positions where ``known`` ``[U, T]`` is True."""

    def __init__(self, k, device):
        self.tokens = torch.zeros(0, 0, dtype=torch.long, device=device)
        self.segments = torch.zeros_like(self.tokens)
        self.known = torch.zeros(0, 0, dtype=torch.bool, device=device)
        self.prompts = torch.zeros(0, 0, k, dtype=torch.long, device=device)
        self.length = torch.zeros(0, dtype=torch.long, device=device)

    def fit(self, users, width):
        """Grow to at least ``users`` rows and ``width`` positions (new space empty)."""
        more_users, more_width = max(0, users - len(self.length)), max(0, width - self.tokens.size(1))
        if more_users or more_width:
            pad = (0, more_width, 0, more_users)
            self.tokens, self.segments = F.pad(self.tokens, pad), F.pad(self.segments, pad)
            self.known = F.pad(self.known, pad)
            self.prompts = F.pad(self.prompts, (0, 0, *pad))
            self.length = F.pad(self.length, (0, more_users))

    def store(self, users, item_seq, segment_ids, common, known, missing, prompts):
        """Keep what rows that wrote something know now; of several rows of one user in the
        batch, the last. A row that is a prefix of its user's kept history (validation after
        a test) adds its prompts to that history; any other replaces it."""
        batch = torch.arange(len(users), device=users.device)
        last = torch.full_like(self.length, -1).scatter_reduce(0, users, batch, reduce="amax")
        wrote = missing.any(dim=1) & (last[users] == batch)
        width = item_seq.size(1)
        length = (item_seq != 0).sum(dim=1)
        # All of the row's tokens equal the kept history's: the row is a prefix of it (a longer
        # row differs where the kept history's padding starts).
        prefix = common >= length
        adds, replaces = wrote & prefix, wrote & ~prefix
        if adds.any():
            user = users[adds]
            self.known[user, :width] |= missing[adds]
            self.prompts[user, :width] = torch.where(
                missing[adds].unsqueeze(-1), prompts[adds], self.prompts[user, :width]
            )
        if replaces.any():
            user = users[replaces]
            now_known = known[replaces] | missing[replaces]
            for table, values in ((self.tokens, item_seq[replaces]), (self.segments, segment_ids[replaces]),
                                  (self.known, now_known)):
                table[user] = 0
                table[user, :width] = values
            self.prompts[user] = 0
            self.prompts[user, :width] = torch.where(now_known.unsqueeze(-1), prompts[replaces], 0)
            self.length[user] = length[replaces]


def with_tail_slots(item_seq, item_seq_len, tail_length):
    """Histories without prompts, plus ``tail_length`` empty slots: ``[B, T] -> [B, T + K]``."""
    padded = torch.nn.functional.pad(item_seq, (0, tail_length))
    return PromptedBatch(
        item_seq=padded,
        segment_ids=torch.full_like(padded, REAL_SEGMENT),
        target_seq=None,
        last_item_index=item_seq_len - 1,
        tail_length=tail_length,
    )


def _valid_mask(item_seq_len, seq_len):
    """``[B] -> [B, T]``: True at the first ``item_seq_len`` positions of each row."""
    return torch.arange(seq_len, device=item_seq_len.device) < item_seq_len.unsqueeze(-1)
