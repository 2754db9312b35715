"""Full-sort scoring in groups of similar history length, each trimmed to its longest history.

Trailing padding is inert in RecGPT, SASRec and GRU4Rec (causal: nothing after the last real
item reaches it) and in BERT4Rec (padding is masked out of attention): the output at the last
real item is the same whatever follows it. Scoring users in length groups therefore changes
no score and spends no compute on padding, which is most of a padded batch on these datasets.
"""

import torch

TOKENS_PER_GROUP = 16384  # history tokens scored at once (bounds the activations held in memory)


def length_groups(lengths, tokens_per_group):
    """Row indices ``[B] -> list of index tensors``, shortest rows first, each group holding
    at most ``tokens_per_group`` tokens once padded to its longest row (at least one row)."""
    order = torch.argsort(lengths, stable=True)
    groups, start = [], 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * int(lengths[order[stop]]) <= tokens_per_group:
            stop += 1
        groups.append(order[start:stop])
        start = stop
    return groups


def scores_by_length_group(score_group, lengths, tokens_per_group):
    """``[B, n_items]`` scores assembled from ``score_group(rows, width) -> [len(rows), n_items]``,
    called once per length group with the width of its longest history."""
    scores = None
    for rows in length_groups(lengths, tokens_per_group):
        group_scores = score_group(rows, int(lengths[rows].max()))
        if scores is None:
            scores = group_scores.new_empty(len(lengths), group_scores.size(1))
        scores[rows] = group_scores
    return scores
