"""Inference-validating two-stage recall as a full-sort scorer."""

import torch
import torch.nn.functional as F

from recbole_recgpt.model.prompts import PROMPT_SEGMENT, REAL_SEGMENT


def without(scores, excluded=None):
    """``[B, n_items]`` scores with padding (id 0) and the ``excluded`` ``[B, E]`` ids at -inf."""
    scores[:, 0] = -torch.inf
    if excluded is not None:
        scores.scatter_(1, excluded, -torch.inf)
    return scores


def merge_two_stage(stage1_items, stage2_scores):
    """One score per item that ranks ``stage1_items`` first, in their order, then the rest
    by ``stage2_scores``.

    stage1_items: ``[B, N]`` item ids, best first. stage2_scores: ``[B, n_items]``.
    Returns ``[B, n_items]``.
    """
    n = stage1_items.size(1)
    ceiling = stage2_scores.max(dim=1, keepdim=True).values
    ceiling = torch.where(torch.isfinite(ceiling), ceiling, torch.zeros_like(ceiling))
    # Strictly above every stage-2 score (by a step that survives float rounding at the
    # ceiling's magnitude), decreasing with the stage-1 rank.
    rank_bonus = torch.arange(n, 0, -1, device=stage2_scores.device, dtype=stage2_scores.dtype)
    merged = stage2_scores.clone()
    merged.scatter_(1, stage1_items, ceiling + rank_bonus * (1 + ceiling.abs()))
    return merged


class TwoStageRecall:
    """Stage 1: top ``stage1_n`` items from the user vector at the last real item.
    Stage 2: the first ``extension_length`` stage-1 items (``None``: as many as the batch has
    tail slots, the prompt length) are written after the last real item (as prompt tokens, the
    last item's extension); the user vector at the end of that extension ranks everything else.

    ``score_at(item_seq, segment_ids, index) -> [B, n_items]`` scores the next item from the
    hidden state at ``index`` (``[B]``) of each row. ``n_positions``: the position table's
    size when positions are token indices (``None``: no limit).

    Scores come out so that RecBole's top-k of them is exactly the two-stage list: for
    ``k <= stage1_n`` that is stage 1 alone (the single-stage ranking of the prompted
    history), for ``k > stage1_n`` the stage-1 items followed by stage 2's best ``k - N``.
    """

    def __init__(self, stage1_n, extension_length=None, n_positions=None):
        self.stage1_n = stage1_n
        self.extension_length = extension_length
        self.n_positions = n_positions

    def __call__(self, score_at, batch, excluded=None):
        """``excluded``: ``[B, E]`` item ids (0 = none) that neither stage may return, such as
        the history when the evaluator masks it: stage 1 then takes N items that count."""
        stage1_scores = without(score_at(batch.item_seq, batch.segment_ids, batch.last_item_index), excluded)
        stage1_items = stage1_scores.topk(self.stage1_n, dim=1).indices
        item_seq, segment_ids, end = self.extend_with(batch, stage1_items)
        stage2_scores = without(score_at(item_seq, segment_ids, end), excluded)
        return merge_two_stage(stage1_items, stage2_scores)

    def top_k(self, rank_at, batch, k, excluded=None):
        """The two-stage list itself, ``[B, k]`` item ids, best first: what RecBole's top-k of
        :meth:`__call__`'s scores is, without scoring the catalogue into one matrix.

        ``rank_at(item_seq, segment_ids, index, n, excluded) -> [B, n]``: the ``n`` best next
        items from the hidden state at ``index``, none of ``excluded`` (``[B, E]``, 0 = none).
        Stage 2 skips the stage-1 items as well: they already hold the first N places.
        """
        stage1_items = rank_at(batch.item_seq, batch.segment_ids, batch.last_item_index, self.stage1_n, excluded)
        if k <= self.stage1_n:
            return stage1_items[:, :k]
        item_seq, segment_ids, end = self.extend_with(batch, stage1_items)
        skipped = stage1_items if excluded is None else torch.cat((excluded, stage1_items), dim=1)
        stage2_items = rank_at(item_seq, segment_ids, end, k - self.stage1_n, skipped)
        return torch.cat((stage1_items, stage2_items), dim=1)

    def extend_with(self, batch, stage1_items):
        """Write the first ``extension_length`` stage-1 items after the last real item.

        An extension longer than the tail slots widens the rows; a row whose extension would
        run past the position table drops its oldest tokens (up to a real item), as a longer
        history is truncated. Returns the new ``item_seq``, ``segment_ids`` and the index of
        the extension's end.
        """
        k = batch.tail_length if self.extension_length is None else self.extension_length
        last = batch.last_item_index
        width = max(batch.item_seq.size(1), int(last.max()) + 1 + k)
        item_seq = F.pad(batch.item_seq, (0, width - batch.item_seq.size(1)))
        segment_ids = F.pad(batch.segment_ids, (0, width - batch.segment_ids.size(1)), value=REAL_SEGMENT)
        if self.n_positions is not None and int(last.max()) + k >= self.n_positions:
            item_seq, segment_ids, last = drop_oldest(item_seq, segment_ids, last, last + k + 1 - self.n_positions)
            item_seq, segment_ids = item_seq[:, : self.n_positions], segment_ids[:, : self.n_positions]
        if k:
            slots = last.unsqueeze(1) + 1 + torch.arange(k, device=item_seq.device)
            item_seq = item_seq.scatter(1, slots, stage1_items[:, :k])
            segment_ids = segment_ids.scatter(1, slots, PROMPT_SEGMENT)
        return item_seq, segment_ids, last + k


def drop_oldest(item_seq, segment_ids, last_item_index, overflow):
    """Shift each row left past its first ``overflow`` (``[B]``, <= 0: none) tokens, to the next
    real item, so that a prompt is never left without the item it follows.

    Returns the shifted ``item_seq``, ``segment_ids`` (``[B, T]``, 0-padded on the right) and
    ``last_item_index``.
    """
    columns = torch.arange(item_seq.size(1), device=item_seq.device)
    real = (segment_ids == REAL_SEGMENT) & (item_seq > 0)
    first_kept = (real & (columns >= overflow.unsqueeze(1))).int().argmax(dim=1)
    shift = torch.where(overflow > 0, first_kept, torch.zeros_like(first_kept))
    source = columns + shift.unsqueeze(1)
    inside = source < item_seq.size(1)
    source = source.clamp(max=item_seq.size(1) - 1)
    item_seq = torch.where(inside, item_seq.gather(1, source), 0)
    segment_ids = torch.where(inside, segment_ids.gather(1, source), REAL_SEGMENT)
    return item_seq, segment_ids, last_item_index - shift
