"""Training data as whole user sequences instead of RecBole's one padded row per prefix.

RecBole's sequential datasets turn a history ``i_1..i_n`` into ``n - 1`` rows
``(i_1..i_s) -> i_{s+1}``, each padded to ``MAX_ITEM_LIST_LENGTH``. A causal model
supervised at every position gets exactly the same (prefix, next item) pairs from one pass
over ``i_1..i_n``, so this loader yields each user's training sequence once, in batches of
similar length (little padding) holding about ``train_batch_size`` pairs each.

Sequences longer than ``MAX_ITEM_LIST_LENGTH + 1`` are cut, from the end, into windows of
that many items, so every next item is still a target exactly once and no context exceeds
``MAX_ITEM_LIST_LENGTH`` items; positions near the start of a later window see a shorter
prefix than RecBole's sliding rows would give them.

In a run of several processes each process owns a fixed, disjoint share of the sequences
(dealt out by length, so the shares are alike) and takes the same number of steps per epoch;
a step of all processes together holds about ``train_batch_size`` pairs, as one process's does.
"""

import numpy as np
import torch

from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.data.interaction import Interaction

from recbole_recgpt import distributed
from recbole_recgpt.errors import DataError

# Field-name prefixes of the per-position targets and segments, added to ITEM_SEQ's name.
TARGET_PREFIX = "target_"
SEGMENT_PREFIX = "segment_"


def item_seq_field(dataset):
    """Name of the history field, as RecBole's ``SequentialRecommender`` spells it
    (``dataset.item_id_list_field`` exists only when the item column is named ``item_id``)."""
    return dataset.iid_field + dataset.config["LIST_SUFFIX"]


def user_training_sequences(dataset):
    """Rebuild each user's training sequence from a RecBole sequential train split.

    Returns ``(user_ids, sequences)``: an int64 array ``[U]`` and a list of int64 arrays,
    oldest item first.
    """
    feat = dataset.inter_feat
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    user = feat[uid_field].numpy()
    target = feat[iid_field].numpy()
    first_item = feat[item_seq_field(dataset)][:, 0].numpy()
    # Rows are in (user, time) order within each user; a stable sort keeps that order.
    order = np.argsort(user, kind="stable")
    user, target, first_item = user[order], target[order], first_item[order]
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    ends = np.r_[starts[1:], len(user)]
    sequences = [np.r_[first_item[s], target[s:e]] for s, e in zip(starts, ends)]
    return user[starts], sequences


def split_windows(sequence, window):
    """Cut a sequence into windows of at most ``window`` items, from the end, that
    overlap by one item so that every item after the first is a target exactly once."""
    if len(sequence) <= window:
        return [sequence]
    windows = []
    end = len(sequence)
    while end > 1:
        start = max(0, end - window)
        windows.append(sequence[start:end])
        end = start + 1
    return windows[::-1]


def share_rows(lengths, world_size):
    """Deal rows to ``world_size`` processes by length: ``[R] -> list of index tensors``, one
    per process, each in row order. Process r takes every ``world_size``-th row of the
    length-sorted order from the r-th, so every share has nearly the same lengths."""
    order = torch.sort(torch.as_tensor(lengths), stable=True).indices
    return [torch.sort(order[r::world_size]).values for r in range(world_size)]


def length_batch_sizes(sorted_lengths, pairs_per_batch):
    """Rows per batch when rows sorted by length are cut into ~``pairs_per_batch`` pairs."""
    pairs = torch.cumsum(sorted_lengths, 0)
    batch_id = torch.div(pairs - 1, pairs_per_batch, rounding_mode="floor")
    return torch.unique_consecutive(batch_id, return_counts=True)[1].tolist()


class UserSequenceDataLoader:
    """Length-bucketed batches of whole user sequences for :class:`RecGPT`.

    Each batch is an :class:`~recbole.data.interaction.Interaction` with ``ITEM_SEQ``
    (inputs ``[B, T]``), ``TARGET_SEQ`` (next item per position, 0 = padding),
    ``ITEM_SEQ_LEN`` ``[B]``, ``USER_ID`` ``[B]`` and, when ``neg_sample_num > 0``,
    ``NEG_ITEM_ID`` ``[B, T, neg_sample_num]``: items drawn uniformly from those the user
    has no training interaction with. After :meth:`write_prompts`, batches carry the
    prompted sequences instead, with their segments (``SEGMENT_PREFIX`` + ``ITEM_SEQ``).

    ``rank`` / ``world_size`` (default: this process's) select the share of rows this loader
    yields (:func:`share_rows`), in batches of ``train_batch_size / world_size`` pairs, and
    as many batches per epoch as the largest share needs, so every process takes the same
    number of steps.
    """

    def __init__(self, config, dataset, neg_sample_num=0, shuffle=True, rank=None, world_size=None):
        self.dataset = dataset
        self.shuffle = shuffle
        self.neg_sample_num = neg_sample_num
        self.rank = distributed.rank() if rank is None else rank
        self.world_size = distributed.world_size() if world_size is None else world_size
        # As RecBole's loaders: a step of all processes together keeps train_batch_size.
        self.pairs_per_batch = max(1, config["train_batch_size"] // self.world_size)
        self.n_items = dataset.item_num
        self.uid_field = dataset.uid_field
        self.item_seq_field = item_seq_field(dataset)
        self.item_seq_len_field = dataset.item_list_length_field
        self.target_seq_field = TARGET_PREFIX + self.item_seq_field
        self.segment_seq_field = SEGMENT_PREFIX + self.item_seq_field
        self.prompted = None
        self.neg_field = config["NEG_PREFIX"] + dataset.iid_field

        users, sequences = user_training_sequences(dataset)
        window = config["MAX_ITEM_LIST_LENGTH"] + 1
        rows = [(u, w) for u, s in zip(users, sequences) for w in split_windows(s, window) if len(w) > 1]
        shares = share_rows([len(w) - 1 for _, w in rows], self.world_size)
        if len(rows) < self.world_size:
            raise DataError(
                f"{len(rows)} training sequence(s) cannot be shared by {self.world_size} processes; run fewer processes"
            )
        # The batch count of the largest share: a share with fewer batches splits some.
        lengths = torch.tensor([len(w) - 1 for _, w in rows], dtype=torch.long)
        self.batch_count = max(
            len(length_batch_sizes(torch.sort(lengths[share]).values, self.pairs_per_batch)) for share in shares
        )
        rows = [rows[i] for i in shares[self.rank].tolist()]
        self.row_user = torch.tensor([u for u, _ in rows], dtype=torch.long)
        self.row_length = torch.tensor([len(w) - 1 for _, w in rows], dtype=torch.long)
        self.row_items = torch.zeros(len(rows), window, dtype=torch.long)
        for r, (_, w) in enumerate(rows):
            self.row_items[r, : len(w)] = torch.from_numpy(w)
        # Sorted keys user * n_items + item of every training interaction, for an exact,
        # vectorised "has the user seen this item" test when sampling negatives.
        keys = np.concatenate([u * self.n_items + s for u, s in zip(users, sequences)])
        self.seen_keys = torch.from_numpy(np.unique(keys))
        self.batches = self._make_batches(torch.arange(len(rows)))

    @property
    def pair_count(self):
        """Number of (prefix, next item) pairs in one epoch."""
        return int(self.row_length.sum())

    def _make_batches(self, order):
        """Rows in ``order``, stably sorted by length, cut into ~``pairs_per_batch`` pairs,
        then split until there are ``batch_count`` batches (see :meth:`_even_out`)."""
        order = order[torch.sort(self.row_length[order], stable=True).indices]
        return self._even_out(list(torch.split(order, length_batch_sizes(self.row_length[order], self.pairs_per_batch))))

    def _even_out(self, batches):
        """Split the batches with the most rows in halves until there are ``batch_count``:
        in a run of several processes every process must take the same number of steps
        (each step waits for all). Alone, nothing is split."""
        while len(batches) < self.batch_count:
            largest = max(range(len(batches)), key=lambda b: len(batches[b]))
            rows = batches[largest]
            if len(rows) < 2:
                raise DataError(
                    f"process {self.rank} has too few training sequences for {self.batch_count} steps per epoch; "
                    "run fewer processes"
                )
            batches[largest : largest + 1] = [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
        return batches

    def __len__(self):
        return len(self.batches)

    @property
    def sampler(self):
        """RecBole's trainer calls ``train_data.sampler.set_epoch(epoch)`` in a run of several
        processes (for torch's ``DistributedSampler``); this loader is its own sampler."""
        return self

    def set_epoch(self, epoch):
        """Nothing to do: a process's share is fixed, and it is shuffled by the process's own
        random generator (saved in resume states)."""

    def __iter__(self):
        if self.shuffle:
            # Shuffling before the stable sort varies who shares a batch between epochs.
            self.batches = self._make_batches(torch.randperm(len(self.row_length)))
            self.batches = [self.batches[i] for i in torch.randperm(len(self.batches)).tolist()]
        for rows in self.batches:
            yield self._batch(rows)

    def write_prompts(self, prompt_batch):
        """Prompt every row once; later batches carry the prompted sequences.

        ``prompt_batch(item_seq, item_seq_len, target_seq, user_ids)`` returns a
        :class:`~recbole_recgpt.model.prompts.PromptedBatch`. Worth it only when the prompts
        cannot change during training (a frozen prompt writer).
        """
        self.prompted = None
        written = [(rows, prompt_batch(*self._plain_fields(rows))) for rows in self._make_batches(torch.arange(len(self.row_length)))]
        width = max(batch.item_seq.size(1) for _, batch in written)
        prompted = {name: torch.zeros(len(self.row_length), width, dtype=torch.long) for name in ("items", "segments", "targets")}
        for rows, batch in written:
            for name, values in zip(prompted, (batch.item_seq, batch.segment_ids, batch.target_seq)):
                prompted[name][rows, : values.size(1)] = values.cpu()  # a loader's rows live on the CPU
        prompted["length"] = (prompted["items"] > 0).sum(dim=1)
        self.prompted = prompted

    def _plain_fields(self, rows):
        batch = self._batch(rows)
        return tuple(batch[f] for f in (self.item_seq_field, self.item_seq_len_field, self.target_seq_field, self.uid_field))

    def _batch(self, rows):
        if self.prompted is not None:
            width = int(self.prompted["length"][rows].max())
            return Interaction(
                {
                    self.item_seq_field: self.prompted["items"][rows, :width],
                    self.segment_seq_field: self.prompted["segments"][rows, :width],
                    self.target_seq_field: self.prompted["targets"][rows, :width],
                    self.item_seq_len_field: self.row_length[rows],
                    self.uid_field: self.row_user[rows],
                }
            )
        length = self.row_length[rows]
        items = self.row_items[rows, : int(length.max()) + 1]
        inputs, targets = items[:, :-1].clone(), items[:, 1:].clone()
        # A window's final item is a target only; past the row's length the inputs would
        # otherwise still hold it.
        past_end = torch.arange(inputs.size(1)) >= length.unsqueeze(1)
        inputs[past_end] = 0
        targets[past_end] = 0
        fields = {
            self.item_seq_field: inputs,
            self.target_seq_field: targets,
            self.item_seq_len_field: length,
            self.uid_field: self.row_user[rows],
        }
        if self.neg_sample_num:
            fields[self.neg_field] = self.sample_negatives(self.row_user[rows], inputs.size(1))
        return Interaction(fields)

    def sample_negatives(self, users, seq_len):
        """``[B] -> [B, seq_len, neg_sample_num]`` unseen items, uniform over 1..n_items-1."""
        shape = (len(users), seq_len, self.neg_sample_num)
        negatives = torch.randint(1, self.n_items, shape)
        user_keys = (users * self.n_items).view(-1, 1, 1)
        for _ in range(100):
            seen = self._seen(user_keys + negatives)
            if not seen.any():
                return negatives
            negatives[seen] = torch.randint(1, self.n_items, (int(seen.sum()),))
        raise ValueError(
            "could not sample negatives: some user has interacted with nearly every item; "
            "lower neg_sample_num or filter such users (user_inter_num_interval)"
        )

    def _seen(self, keys):
        index = torch.searchsorted(self.seen_keys, keys).clamp(max=len(self.seen_keys) - 1)
        return self.seen_keys[index] == keys


class HistoryMaskingEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-sort evaluation loader that also hands the evaluator, for sequential
    data, each user's history items to mask (``eval_mask_history``), as RecBole already does
    for general models' training items. A target that repeats a history item is masked too:
    the protocol of the reference code, which suits datasets without repeats (the Amazon
    files) and costs the repeats where there are some (Yelp)."""

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        if not self.is_sequential:
            return interaction, history_index, positive_u, positive_i
        item_seq = interaction[self.config["ITEM_ID_FIELD"] + self.config["LIST_SUFFIX"]]
        rows, columns = item_seq.nonzero(as_tuple=True)
        return interaction, (rows, item_seq[rows, columns]), positive_u, positive_i
