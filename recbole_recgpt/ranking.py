"""Top-k over the catalogue in bounded memory: the items are scored a chunk at a time and a
running top-k keeps each row's best ``k``.

RecBole's full-sort evaluation builds a ``[users, n_items]`` score matrix per batch; at a
million items one batch of 2,048 users holds 8 GB of scores, and writing prompts (a top-K at
every history position) far more. Every ranking this package makes (evaluation, prompt
writing, both stages of two-stage recall, recommendations) goes through :func:`top_k`, so its
memory per batch is ``SCORES_PER_CHUNK`` scores whatever the catalogue, beside one copy of the
item table in norm order (:class:`Catalogue`). The lists are the ones a single ``topk`` over all
scores returns (up to the order of exactly tied scores).
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
    ``[n_items, H]`` item table (or its :class:`Catalogue`, to share one norm order between
    rankings) -> ``[B, k]`` item ids.

    Padding (id 0) and the ``excluded`` ids (``[B, E]``, 0 = none) are ranked last, at -inf,
    as RecBole ranks them. The rows are ranked in blocks of at most :data:`ROWS_PER_BLOCK`,
    each against the catalogue a chunk of items at a time: at most ``scores_per_chunk``
    (default :data:`SCORES_PER_CHUNK`) scores exist at once, and never fewer than ``k`` per row.
    A catalogue wider than one chunk is scored in order of item norm (:class:`_NormOrdered`),
    which lets a row stop once no remaining item can enter its list.
    """
    rows, width = block_shape(vectors.size(0), k, scores_per_chunk, vectors.device.type)
    catalogue = (item_table if isinstance(item_table, Catalogue) else Catalogue(item_table)).scan(width)
    # One score buffer serves every chunk: a fresh 4 MB tensor per chunk is a fresh mapping
    # from the allocator, and its page faults cost as much as the product that fills it.
    buffer = vectors.new_empty(min(rows, vectors.size(0)) * min(width, len(catalogue)))
    blocks = [_block_top_k(vectors[start:start + rows], catalogue, k,
                           None if excluded is None else catalogue.places(excluded[start:start + rows]), width, buffer)
              for start in range(0, max(vectors.size(0), 1), rows)]
    return torch.cat(blocks) if len(blocks) != 1 else blocks[0]


def block_shape(n_rows, k, scores_per_chunk=None, device_type="cpu"):
    """``(rows per block, items per chunk)`` of :func:`top_k` for ``n_rows`` rows."""
    if device_type == "cpu":
        rows = min(max(n_rows, 1), ROWS_PER_BLOCK)
        return rows, max(k, (scores_per_chunk or SCORES_PER_CHUNK) // rows)
    rows = max(n_rows, 1)
    return rows, max(k, (scores_per_chunk or GPU_SCORES_PER_CHUNK) // rows)


class Catalogue:
    """An item table as :func:`top_k` scans it, prepared once for every ranking against the same
    weights: its norm-ordered copy (:class:`_NormOrdered`) is made at the first ranking that
    needs it and reused by the rest. Making it costs a sort and a copy of the table (0.5 s at
    10^6 items x 64 on 2 threads), as much as ranking thousands of rows that stop early, so
    a batch of users to evaluate shares one, and a frozen prompt writer keeps one for all its
    batches (``RecGPT._catalogue``). Hold it only while the table does not change: it does not
    see updates to the weights.
    """

    def __init__(self, item_table):
        self.table = item_table
        self._norm_ordered = None

    def __len__(self):
        return self.table.size(0)

    def scan(self, width):
        """The order to scan in at ``width`` items per chunk: as it is when one chunk holds the
        table (nothing to skip), else by decreasing item norm."""
        if self.table.size(0) <= width:
            return _InOrder(self.table)
        if self._norm_ordered is None:
            self._norm_ordered = _NormOrdered(self.table)
        return self._norm_ordered


class _InOrder:
    """The item table as it is: place ``p`` is item ``p``; no bound on what is left."""

    def __init__(self, item_table):
        self.table = item_table
        self.padding_place = 0

    def __len__(self):
        return self.table.size(0)

    def chunk(self, start, stop):
        return self.table[start:stop]

    def places(self, items):
        return items

    def items(self, places):
        return places

    def largest_norm_from(self, start):
        return None


class _NormOrdered:
    """The item table in decreasing order of item norm, a chunk at a time.

    A score is at most the row's norm times the item's (Cauchy-Schwarz), so once a row's k-th
    best score beats its norm times the largest norm left, no later item can enter its list and
    the row stops. Catalogues are long-tailed: rare items, barely trained, keep embeddings near
    their small initial norm, so on a large catalogue most of it is never scored. Writing the
    prompts of 20 batches after one sampled-softmax pre-training epoch on the synthetic
    catalogues of ``benchmarks.scale`` scored 4.1% of the scores at 10^5 items and (10 batches)
    0.4% at 10^6, after one full-CE epoch on amazon-beauty (12,101 items) 36%; with the buffer
    and row skipping of :func:`_block_top_k`, writing took 1/9.7, 1/12.5 and 1/1.8 of the time of
    the ranking before both (3aedf26), in one process (``benchmarks/norm_order.py`` compares the
    norm order with the id order). The lists are the ones the unordered scan gives (up to the
    order of exactly tied scores).
    """

    # The bound is exact in real numbers; this margin covers float32's rounding of the product.
    SLACK = 1e-4

    def __init__(self, item_table):
        self.n_items = item_table.size(0)
        norms = item_table.norm(dim=1)
        norms, self.order = norms.sort(descending=True)
        self.norms = norms * (1 + self.SLACK)
        # A copy of the table in that order (one per Catalogue): each chunk is then a view of it.
        self.ordered = item_table[self.order]
        self.place_of = torch.empty_like(self.order)
        self.place_of[self.order] = torch.arange(len(self.order), device=self.order.device)
        self.padding_place = int(self.place_of[0])

    def __len__(self):
        return self.n_items

    def chunk(self, start, stop):
        return self.ordered[start:stop]

    def places(self, items):
        """Item ids -> their places in the order (0, "none", becomes padding's place, which is
        ranked last anyway)."""
        return self.place_of[items]

    def items(self, places):
        return self.order[places]

    def largest_norm_from(self, start):
        return self.norms[start]


def _block_top_k(vectors, catalogue, k, excluded, width, buffer):
    """:func:`top_k` of one block of rows, ``width`` items of ``catalogue`` at a time, the
    scores of each chunk written into ``buffer``; ``excluded`` are places in ``catalogue``.

    After the first chunk, a row takes part in a chunk's top-k only when the chunk holds a
    score above the row's running k-th best: a row maximum is a cheap vectorised pass, a
    ``topk`` is not, and past the first chunks few rows gain anything from a chunk. A row
    whose k-th best no remaining item can beat (:class:`_NormOrdered`) is not scored again.
    """
    n_items = len(catalogue)
    values = places = None
    active = torch.arange(vectors.size(0), device=vectors.device)  # rows still scored
    row_norms = vectors.norm(dim=1)
    for start in range(0, n_items, width):
        stop = min(start + width, n_items)
        if values is not None:
            bound = catalogue.largest_norm_from(start)
            if bound is not None:
                active = active[values[active, -1] <= row_norms[active] * bound]
                if len(active) == 0:
                    break
        scores = buffer[: len(active) * (stop - start)].view(len(active), stop - start)
        torch.mm(vectors[active], catalogue.chunk(start, stop).t(), out=scores)
        if start <= catalogue.padding_place < stop:
            scores[:, catalogue.padding_place - start] = -torch.inf
        if excluded is not None:
            local = excluded[active] - start
            rows, columns = ((local >= 0) & (local < stop - start)).nonzero(as_tuple=True)
            scores[rows, local[rows, columns]] = -torch.inf
        if values is None:
            values, places = _chunk_top_k(scores, k)
            places += start
            continue
        gaining = (scores.amax(dim=1) > values[active, -1]).nonzero().squeeze(1)
        if len(gaining) == 0:
            continue
        if 2 * len(gaining) > len(scores):  # most rows gain (a few wide chunks, a large k): rank them all
            gaining = torch.arange(len(scores), device=scores.device)
        rows = active[gaining]
        chunk_values, chunk_places = _chunk_top_k(scores[gaining], k)
        merged_values, best = torch.cat((values[rows], chunk_values), dim=1).topk(k, dim=1)
        values[rows] = merged_values
        places[rows] = torch.cat((places[rows], chunk_places + start), dim=1).gather(1, best)
    return catalogue.items(places)


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
    catalogue = Catalogue(model.item_embedding.weight) if type(model).__name__ in LAST_STATE_MODELS else None

    def rank_group(rows, width):
        group_excluded = None if excluded is None else excluded[rows]
        if catalogue is not None:
            vectors = model.forward(item_seq[rows, :width], lengths[rows])
            return top_k(vectors, catalogue, k, group_excluded)
        group = interaction[rows]
        group[model.ITEM_SEQ] = item_seq[rows, :width]
        return top_k_of_scores(model.full_sort_predict(group).view(len(rows), -1), k, group_excluded)

    # Trailing padding is inert in these models: each length group is scored at its own width.
    return scores_by_length_group(rank_group, lengths, TOKENS_PER_GROUP)
