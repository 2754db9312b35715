"""RecBole's evaluation ``Collector``, with the top-k hits found from the positives alone.

For ``rec.topk`` (what Hit, NDCG, Recall, MRR and Precision read) RecBole builds a dense
``[users, n_items]`` 0/1 matrix of the positives, sums it and gathers it at the top-k: three
passes over a matrix as large as the scores, which on amazon-sports (18,357 items) cost more
than the scoring itself (``benchmarks/collector_speed.py``). Here the same ``[users, k + 1]``
result comes from the positive pairs and the top-k lists only.

When the metrics read nothing but the top-k lists (Hit, NDCG, Recall, MRR, Precision and the
list-based ones such as ItemCoverage), the trainer hands over the lists themselves
(:class:`recbole_recgpt.ranking.TopItems`), ranked without a ``[users, n_items]`` matrix.

Beside it the collector keeps each evaluated row's user id (``rec.users``), and the last
evaluation's per-user rows (:meth:`TopkCollector.per_user_rows`): a run's record keeps its
test users' hit ranks from them, so no evaluation is run twice.
"""

import torch

from recbole.evaluator import Collector
from recbole.evaluator.register import Register, metric_information

from recbole_recgpt.ranking import TopItems


def topk_hits(topk_idx, positive_u, positive_i, n_items):
    """RecBole's ``rec.topk`` rows: ``[B, k]`` top-k item ids and the positive pairs
    ``(positive_u[j], positive_i[j])`` -> ``[B, k + 1]``: 1 where the ranked item is a
    positive of its user, then the user's number of distinct positives."""
    n_users = topk_idx.size(0)
    # RecBole's loaders hand the positives over on the CPU, whatever the model's device.
    positive_u, positive_i = positive_u.to(topk_idx.device), positive_i.to(topk_idx.device)
    # RecBole marks a pair once however often it is listed.
    pairs = torch.unique(positive_u.long() * n_items + positive_i.long())
    users, items = pairs // n_items, pairs % n_items
    hits = torch.zeros_like(topk_idx, dtype=torch.int)
    hits.index_add_(0, users, (topk_idx[users] == items.unsqueeze(1)).int())
    positives = torch.bincount(users, minlength=n_users).to(torch.int).unsqueeze(1)
    return torch.cat((hits, positives), dim=1)


class TopkCollector(Collector):
    """``Collector`` whose ``rec.topk`` is :func:`topk_hits` (the same tensor as RecBole's);
    whatever else the metrics need, RecBole's ``Collector`` collects. It takes either full-sort
    scores or, when :attr:`reads_top_k_only`, each user's top-k list (:class:`TopItems`)."""

    # What the top-k lists give (RecBole's ``rec.topk`` and ``rec.items``), and what RecBole
    # collects once from the training data rather than from each batch.
    FROM_TOP_K_LISTS = ("rec.topk", "rec.items")
    FROM_TRAINING_DATA = ("data.num_items", "data.count_items")

    def __init__(self, config):
        super().__init__(config)
        self.register_without_topk = Register(config)
        setattr(self.register_without_topk, "rec.topk", False)
        needed = {key for metric in self.register.metrics for key in metric_information[metric]}
        # Whether the metrics read the top-k lists only (RecBole's ranking metrics do).
        self.reads_top_k_only = needed <= {*self.FROM_TOP_K_LISTS, *self.FROM_TRAINING_DATA}
        self.user_field = config["USER_ID_FIELD"]
        self.last_struct = None  # what the last evaluation's metrics were computed from

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        if isinstance(scores_tensor, TopItems):
            topk_idx = scores_tensor.indices
            if self.register.need("rec.items"):
                self.data_struct.update_tensor("rec.items", topk_idx)
            if self.register.need("rec.topk"):
                self.data_struct.update_tensor("rec.topk", topk_hits(topk_idx, positive_u, positive_i, scores_tensor.n_items))
                self.data_struct.update_tensor("rec.users", self._row_users(interaction, len(scores_tensor)))
            return
        if self.register.need("rec.topk"):
            _, topk_idx = torch.topk(scores_tensor, max(self.topk), dim=-1)
            hits = topk_hits(topk_idx, positive_u, positive_i, scores_tensor.size(1))
            self.data_struct.update_tensor("rec.topk", hits)
            self.data_struct.update_tensor("rec.users", self._row_users(interaction, scores_tensor.size(0)))
        register, self.register = self.register, self.register_without_topk
        try:
            super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        finally:
            self.register = register

    def _row_users(self, interaction, n_rows):
        """``[n_rows]`` user id of each score row; -1 where the rows are not the batch's
        interactions one to one (a sampled evaluation scores a user's several rows as one)."""
        if interaction is None or self.user_field not in interaction or len(interaction[self.user_field]) != n_rows:
            return torch.full((n_rows,), -1, dtype=torch.long)
        return interaction[self.user_field].long()

    def get_data_struct(self):
        struct = super().get_data_struct()
        if "rec.users" in self.data_struct:  # RecBole clears only the keys it knows of
            del self.data_struct["rec.users"]
        self.last_struct = struct
        return struct

    def per_user_rows(self):
        """``(user ids [U], rec.topk [U, k + 1])`` of the last evaluation, in its order, or None
        when it collected no top-k lists or a row's user is unknown."""
        struct = self.last_struct
        if struct is None or "rec.topk" not in struct or "rec.users" not in struct:
            return None
        users = struct["rec.users"]
        if (users < 0).any():
            return None
        return users.numpy(), struct["rec.topk"].numpy()
