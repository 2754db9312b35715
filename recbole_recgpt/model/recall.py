"""Inference-validating two-stage recall as a full-sort scorer."""

import torch

from recbole_recgpt.model.prompts import PROMPT_SEGMENT


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
    Stage 2: the first ``tail_length`` stage-1 items are written into the tail slots after
    the last real item (as prompt tokens, the last item's extension); the user vector at the
    end of that extension ranks everything else.

    ``score_at(item_seq, segment_ids, index) -> [B, n_items]`` scores the next item from the
    hidden state at ``index`` (``[B]``) of each row.

    Scores come out so that RecBole's top-k of them is exactly the two-stage list: for
    ``k <= stage1_n`` that is stage 1 alone (the single-stage ranking of the prompted
    history), for ``k > stage1_n`` the stage-1 items followed by stage 2's best ``k - N``.
    """

    def __init__(self, stage1_n):
        self.stage1_n = stage1_n

    def __call__(self, score_at, batch, excluded=None):
        """``excluded``: ``[B, E]`` item ids (0 = none) that neither stage may return, such as
        the history when the evaluator masks it: stage 1 then takes N items that count."""
        stage1_scores = without(score_at(batch.item_seq, batch.segment_ids, batch.last_item_index), excluded)
        stage1_items = stage1_scores.topk(self.stage1_n, dim=1).indices
        item_seq, segment_ids, end = self.extend_with(batch, stage1_items)
        stage2_scores = without(score_at(item_seq, segment_ids, end), excluded)
        return merge_two_stage(stage1_items, stage2_scores)

    @staticmethod
    def extend_with(batch, stage1_items):
        """Write the first ``tail_length`` stage-1 items after the last real item.

        Returns the new ``item_seq``, ``segment_ids`` and the index of the extension's end.
        """
        item_seq = batch.item_seq.clone()
        segment_ids = batch.segment_ids.clone()
        k = batch.tail_length
        if k:
            slots = batch.last_item_index.unsqueeze(1) + 1 + torch.arange(k, device=item_seq.device)
            item_seq.scatter_(1, slots, stage1_items[:, :k])
            segment_ids.scatter_(1, slots, PROMPT_SEGMENT)
        return item_seq, segment_ids, batch.last_item_index + k
