"""Top-k over the catalogue in bounded memory: the items are scored a chunk at a time and a
running top-k keeps each row's best ``k``.

RecBole's full-sort evaluation builds a ``[users, n_items]`` score matrix per batch; at a
million items one batch of 2,048 users holds 8 GB of scores, and writing prompts (a top-K at
every history position) far more. Every ranking this package makes (evaluation, prompt
writing, both stages of two-stage recall, recommendations) goes through :func:`top_k`, so its
memory per batch is ``SCORES_PER_CHUNK`` scores whatever the catalogue. The lists are the
ones a single ``topk`` over all scores returns (up to the order of exactly tied scores).
"""

import torch

from recbole.model.abstract_recommender import SequentialRecommender

from recbole_recgpt.model.length_groups import TOKENS_PER_GROUP, scores_by_length_group

# Scores held at once by one block (at most ROWS_PER_BLOCK rows x the items that fill it):
# 2^20 floats, 4 MB. The matrix product is the cheap part of a ranking; the top-k pass over the
# block's scores costs more, and is fastest on wide rows that stay in cache. Against one block
# of all rows x 2^22 scores, on 2 threads (same lists): 4,096 rows x 100,000 items, top-20
# (evaluation's) 0.74 s against 1.97 s; 20,000 rows x 1,000,000 items, top-1 (prompt
# writing's) 16.1 s against 30.1 s. Reusing one score buffer and skipping the rows a chunk
# cannot improve (_block_top_k) then made top-1 1.7-2.3x faster at 10^5-10^6 items (5,120-
# 20,000 rows, against the previous code in one process); top-20 at 10^4-10^5 items is
# unchanged (0.94-1.03x), 1.2-1.4x at 10^6.
SCORES_PER_CHUNK = 1 << 20
ROWS_PER_BLOCK = 256
# Cache-sized blocks are a CPU matter: on a GPU every block is a kernel launch, so all rows go
# in one block of up to 2^26 scores (256 MB). It ran on an H200 (benchmarks/gpu_check.sh), but
# was not timed there against other block shapes.
GPU_SCORES_PER_CHUNK = 1 << 26


@torch.no_grad()  # rankings are lists of ids: nothing to differentiate
def top_k(vectors, item_table, k, excluded=None, scores_per_chunk=None):
    """The ``k`` best items of each row by dot product, best first: ``[B, H]`` vectors and an
    ``[n_items, H]`` item table -> ``[B, k]`` item ids.

    Padding (id 0) and the ``excluded`` ids (``[B, E]``, 0 = none) are ranked last, at -inf,
    as RecBole ranks them. The rows are ranked in blocks of at most :data:`ROWS_PER_BLOCK`,
    each against the catalogue a chunk of items at a time: at most ``scores_per_chunk``
    (default :data:`SCORES_PER_CHUNK`) scores exist at once, and never fewer than ``k`` per row.
    """
    rows, width = block_shape(vectors.size(0), k, scores_per_chunk, vectors.device.type)
    # One score buffer serves every chunk: a fresh 4 MB tensor per chunk is a fresh mapping
    # from the allocator, and its page faults cost as much as the product that fills it.
    buffer = vectors.new_empty(min(rows, vectors.size(0)) * min(width, item_table.size(0)))
    blocks = [_block_top_k(vectors[start:start + rows], item_table, k,
                           None if excluded is None else excluded[start:start + rows], width, buffer)
              for start in range(0, max(vectors.size(0), 1), rows)]
    return torch.cat(blocks) if len(blocks) != 1 else blocks[0]


def block_shape(n_rows, k, scores_per_chunk=None, device_type="cpu"):
    """``(rows per block, items per chunk)`` of :func:`top_k` for ``n_rows`` rows."""
    if device_type == "cpu":
        rows = min(max(n_rows, 1), ROWS_PER_BLOCK)
        return rows, max(k, (scores_per_chunk or SCORES_PER_CHUNK) // rows)
    rows = max(n_rows, 1)
    return rows, max(k, (scores_per_chunk or GPU_SCORES_PER_CHUNK) // rows)


def _block_top_k(vectors, item_table, k, excluded, width, buffer):
    """:func:`top_k` of one block of rows, ``width`` items at a time, the scores of each chunk
    written into ``buffer``.

    After the first chunk, a row takes part in a chunk's top-k only when the chunk holds a
    score above the row's running k-th best: a row maximum is a cheap vectorised pass, a
    ``topk`` is not, and past the first chunks few rows gain anything from a chunk.
    """
    n_items = item_table.size(0)
    values = indices = None
    for start in range(0, n_items, width):
        stop = min(start + width, n_items)
        scores = buffer[: vectors.size(0) * (stop - start)].view(vectors.size(0), stop - start)
        torch.mm(vectors, item_table[start:stop].t(), out=scores)
        if start == 0:
            scores[:, 0] = -torch.inf
        if excluded is not None:
            local = excluded - start
            rows, columns = ((local >= 0) & (local < stop - start)).nonzero(as_tuple=True)
            scores[rows, local[rows, columns]] = -torch.inf
        if values is None:
            values, indices = _chunk_top_k(scores, k)
            indices += start
            continue
        gaining = (scores.amax(dim=1) > values[:, -1]).nonzero().squeeze(1)
        if len(gaining) == 0:
            continue
        if 2 * len(gaining) > len(scores):  # most rows gain (a few wide chunks, a large k): rank them all
            gaining = slice(None)
        chunk_values, chunk_indices = _chunk_top_k(scores[gaining], k)
        merged_values, best = torch.cat((values[gaining], chunk_values), dim=1).topk(k, dim=1)
        values[gaining] = merged_values
        indices[gaining] = torch.cat((indices[gaining], chunk_indices + start), dim=1).gather(1, best)
    return indices


def _chunk_top_k(scores, k):
    """``(values, indices)`` of each row's best ``k`` of ``scores`` (fewer if it is narrower)."""
    if k == 1:  # max is a cheaper pass than topk for prompt writing's top-1
        return scores.max(dim=1, keepdim=True)
    return scores.topk(min(k, scores.size(1)), dim=1)


def top_k_of_scores(scores, k, excluded=None):
    """``[B, n_items]`` scores -> ``[B, k]`` best item ids, padding and ``excluded`` last (for
    a model that only offers full-sort scores)."""
    scores[:, 0] = -torch.inf
    if excluded is not None:
        scores.scatter_(1, excluded, -torch.inf)
    return scores.topk(k, dim=1).indices


def excluded_lists(history_index, n_rows):
    """RecBole's ``history_index`` (row ids, item ids) -> ``[n_rows, E]`` item ids per row,
    0-padded (None stays None)."""
    if history_index is None:
        return None
    rows, items = history_index
    rows, order = rows.sort(stable=True)
    items = items[order]
    counts = torch.bincount(rows, minlength=n_rows)
    lists = items.new_zeros(n_rows, int(counts.max()) if len(rows) else 1)
    first = torch.cumsum(counts, 0) - counts
    lists[rows, torch.arange(len(rows), device=rows.device) - first[rows]] = items
    return lists


class TopItems:
    """What a ranking evaluation batch hands the collector instead of ``[B, n_items]`` scores:
    each user's best ``k`` items (``indices``, ``[B, k]``) out of ``n_items``."""

    def __init__(self, indices, n_items):
        self.indices = indices
        self.n_items = n_items

    def __len__(self):
        return self.indices.size(0)


# RecBole models whose ``full_sort_predict`` is ``forward(item_seq, item_seq_len)`` (``[B, H]``,
# the state at the last item) times the item table: ranked here in chunks. Any other model is
# ranked from its own full-sort scores.
LAST_STATE_MODELS = ("SASRec", "GRU4Rec")


def full_sort_top_k(model, interaction, k, excluded=None):
    """``[B, k]``: the best ``k`` items of each evaluation row of ``interaction``, padding and ``excluded`` (``[B, E]``) never among them while others
    remain. RecGPT ranks with its own ``full_sort_top_k`` (prompts, two-stage recall)."""
    if hasattr(model, "full_sort_top_k"):
        return model.full_sort_top_k(interaction, k, excluded)
    if not isinstance(model, SequentialRecommender):  # Pop and other general models: no histories to group
        return top_k_of_scores(model.full_sort_predict(interaction).view(len(interaction), -1), k, excluded)
    lengths = interaction[model.ITEM_SEQ_LEN]
    item_seq = interaction[model.ITEM_SEQ]

    def rank_group(rows, width):
        group_excluded = None if excluded is None else excluded[rows]
        if type(model).__name__ in LAST_STATE_MODELS:
            vectors = model.forward(item_seq[rows, :width], lengths[rows])
            return top_k(vectors, model.item_embedding.weight, k, group_excluded)
        group = interaction[rows]
        group[model.ITEM_SEQ] = item_seq[rows, :width]
        return top_k_of_scores(model.full_sort_predict(group).view(len(rows), -1), k, group_excluded)

    # Trailing padding is inert in these models: each length group is scored at its own width.
    return scores_by_length_group(rank_group, lengths, TOKENS_PER_GROUP)
