"""Next-item losses over a batch's supervised positions, for every model and phase.

One implementation serves RecGPT's pre-training and prompt-tuning and the whole-sequence
trainer's SASRec and GRU4Rec, so that rows trained with the same loss compare like with like.
Every loss is called the same way::

    loss(hidden, targets, item_table, negatives=None) -> scalar

``hidden`` ``[P, H]``: the sequence representation at each supervised position; ``targets``
``[P]``: the next item there; ``item_table``: the item ``nn.Embedding`` ``[n_items, H]``
(row 0 is padding, never a candidate); ``negatives`` ``[P, n]``: items the training loader
drew per position, unseen by the user (``bce`` and ``bpr`` only). The result is the mean
over positions. Rows are looked up through ``item_table(ids)``, so a sampled loss touches
(and sends gradients to) only the rows it scores.

* ``ce``: softmax over every item (cost grows with the catalogue).
* ``sampled_softmax``: softmax over the target and K negatives drawn once per batch and
  shared by all its positions, uniformly or in proportion to the items' training counts,
  with the log-Q correction (Yi et al., RecSys 2019; the sampled softmax of eSASRec,
  Tikhonovich et al., RecSys 2025). A shared negative that is a row's target is masked for
  that row.
* ``gbce``: gSASRec's generalised binary cross-entropy (Petrov & Macdonald, RecSys 2023),
  k uniform negatives per position, every logit offset by the log-odds where the loss starts
  in balance.
* ``bce`` / ``bpr``: against the loader's per-position negatives: binary cross-entropy
  (the RecGPT paper's pre-training, SASRec's original loss) or RecBole's BPR.

Sampling draws from torch's global generator on the hidden states' device, which RecBole
seeds and the resume states save, so sampled runs are reproducible and resume exactly.
"""

import math

import torch
import torch.nn.functional as F

from recbole_recgpt.errors import ConfigError, check_choice, check_integer

SAMPLED_LOSSES = ("sampled_softmax", "gbce")
NEXT_ITEM_LOSSES = ("ce", *SAMPLED_LOSSES)  # what a softmax over the catalogue can become
SAMPLINGS = ("uniform", "popularity")


class FullSoftmax:
    """``ce``: cross-entropy of the target against every item, ``[P, H] -> scalar``.

    ``rows_per_chunk`` (``ce_chunk_rows``; 0 = all at once, torch's ``cross_entropy``) scores
    that many positions at a time in both passes, recomputing each chunk's logits for the
    backward pass, so the ``[P, n_items]`` logits and their gradient never exist whole: memory
    grows with the chunk instead of the batch, and a chunk that fits the CPU's cache runs
    faster than one pass over the whole matrix. The same loss and gradients, summed in
    another order (the last float bits differ).
    """

    def __init__(self, rows_per_chunk=0):
        self.rows_per_chunk = rows_per_chunk

    def __call__(self, hidden, targets, item_table, negatives=None):
        if self.rows_per_chunk and len(hidden) > self.rows_per_chunk:
            return _ChunkedCrossEntropy.apply(hidden, item_table.weight, targets, self.rows_per_chunk)
        return F.cross_entropy(hidden @ item_table.weight.t(), targets)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ table.T`` (``[P, H]``, ``[n, H]``) against ``targets``
    (``[P]``), ``rows`` positions at a time; backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, table, targets, rows):
        log_normalisers = hidden.new_empty(len(hidden))
        total = hidden.new_zeros(())
        for start in range(0, len(hidden), rows):
            chunk = slice(start, start + rows)
            logits = hidden[chunk] @ table.t()
            log_normalisers[chunk] = torch.logsumexp(logits, dim=1)
            total += (log_normalisers[chunk] - logits.gather(1, targets[chunk].unsqueeze(1)).squeeze(1)).sum()
        ctx.save_for_backward(hidden, table, targets, log_normalisers)
        ctx.rows = rows
        return total / len(hidden)

    @staticmethod
    def backward(ctx, grad):
        hidden, table, targets, log_normalisers = ctx.saved_tensors
        grad_hidden, grad_table = torch.empty_like(hidden), torch.zeros_like(table)
        for start in range(0, len(hidden), ctx.rows):
            chunk = slice(start, start + ctx.rows)
            # d(mean loss)/d(logits) = (softmax - one-hot of the target) / P.
            probabilities = (hidden[chunk] @ table.t() - log_normalisers[chunk].unsqueeze(1)).exp_()
            probabilities[torch.arange(len(probabilities), device=hidden.device), targets[chunk]] -= 1
            probabilities *= grad / len(hidden)
            grad_hidden[chunk] = probabilities @ table
            grad_table.addmm_(probabilities.t(), hidden[chunk])
        return grad_hidden, grad_table, None, None


class NegativeSampler:
    """Draws items ``1..n_items-1`` independently, with replacement, from a distribution q:
    uniform (``item_counts`` None) or proportional to ``item_counts`` ``[n_items]``.

    Popularity sampling is the i.i.d. form of in-batch negatives (a batch's other targets
    follow the training targets' distribution), with q known exactly instead of estimated.
    """

    def __init__(self, n_items, item_counts=None):
        self.n_items = n_items
        self.cumulative_counts = None
        if item_counts is not None:
            counts = torch.as_tensor(item_counts, dtype=torch.long).clone()
            counts[0] = 0  # padding is never drawn
            if len(counts) != n_items or int(counts.sum()) == 0:
                raise ValueError(f"item_counts needs {n_items} counts with a positive total")
            self.cumulative_counts = counts.cumsum(0)
            # An item never seen in training is never drawn, but it may still be scored as a
            # target; counted once, its correction stays finite.
            self.log_q = torch.log(counts.clamp(min=1).double() / int(counts.sum())).float()

    def sample(self, shape, device):
        """``shape`` items drawn from q, on ``device``."""
        if self.cumulative_counts is None:
            return torch.randint(1, self.n_items, shape, device=device)
        cumulative = self._on(device, "cumulative_counts")
        # Integer draws against integer cumulative counts: exact proportions, no float rounding.
        draws = torch.randint(0, int(cumulative[-1]), shape, device=device)
        return torch.searchsorted(cumulative, draws, right=True)

    def log_probability(self, items):
        """``log q(items)``, same shape as ``items``."""
        if self.cumulative_counts is None:
            return torch.full(items.shape, -math.log(self.n_items - 1), device=items.device)
        return self._on(items.device, "log_q")[items]

    def _on(self, device, name):
        # Kept out of any module's buffers (no state-dict entry, nothing for DDP to
        # broadcast); moved to the training device on first use.
        tensor = getattr(self, name)
        if tensor.device != device:
            tensor = tensor.to(device)
            setattr(self, name, tensor)
        return tensor


class SampledSoftmax:
    """``sampled_softmax``: ``[P, H] -> scalar``, the softmax cross-entropy of each target
    against ``n_negatives`` items drawn once for the whole batch by ``sampler``.

    Every candidate's logit, the target's included, is corrected by ``- log q`` (log-Q
    correction), so that the sampled softmax approximates the full one when q is not uniform:
    popular items, drawn more often, are not pushed down more for it. The term is
    ``log(K q)`` as an expected count; ``log K`` is the same for every candidate and the
    softmax ignores it. Under uniform sampling the whole term is such a constant.
    """

    def __init__(self, sampler, n_negatives):
        self.sampler = sampler
        self.n_negatives = n_negatives

    def __call__(self, hidden, targets, item_table, negatives=None):
        shared = self.sampler.sample((self.n_negatives,), hidden.device)  # [K]
        return self.loss_with(shared, hidden, targets, item_table)

    def loss_with(self, shared, hidden, targets, item_table):
        """The loss against the shared negatives ``shared`` ``[K]``."""
        target_logits = (hidden * item_table(targets)).sum(-1, keepdim=True)  # [P, 1]
        negative_logits = hidden @ item_table(shared).t()  # [P, K]
        target_logits = target_logits - self.sampler.log_probability(targets).unsqueeze(1)
        negative_logits = negative_logits - self.sampler.log_probability(shared)
        # A shared negative that is a row's own target is no negative for that row.
        negative_logits = negative_logits.masked_fill(shared.unsqueeze(0) == targets.unsqueeze(1), -torch.inf)
        logits = torch.cat([target_logits, negative_logits], dim=1)  # the target is class 0
        return F.cross_entropy(logits, torch.zeros_like(targets))


def gbce_beta(n_negatives, catalogue_size, calibration):
    """gSASRec's β = α (t (1 - 1/α) + 1/α), α = k / (|I| - 1): the sampling rate of k negatives
    among the |I| - 1 items that are not the target. t = 0 gives β = 1 (plain BCE), t = 1
    gives β = α (fully calibrated to the full-softmax probabilities)."""
    alpha = n_negatives / (catalogue_size - 1)
    return alpha * (calibration * (1 - 1 / alpha) + 1 / alpha)


class GeneralisedBCE:
    """``gbce``: ``[P, H] -> scalar``, gSASRec's generalised binary cross-entropy.

    Each position gets its own ``n_negatives`` items, uniform over the items that are not its
    target (the draw gSASRec's α assumes), and loses
    ``-log σ(s⁺)^β - Σ log(1 - σ(s⁻))`` (the paper's equation; gSASRec's code also divides
    by k + 1, a constant factor). The catalogue is ``n_items - 1`` real items.

    Every score is ``h·e + log(β/k)`` (:attr:`prior_logit`): the log-odds at which the k
    negatives' pull on a shared logit offset balances the target's (k σ(c) = β (1 - σ(c))), so
    that an untrained model, whose scores are all about 0, starts there. Without it the k
    negatives outweigh the target k/β to 1 (about 960 to 1 on amazon-beauty at k = 256,
    t = 0.75) and the fastest way down is to move every item's embedding the same way: on
    ml-100k the item embeddings' mean cosine to their mean went to 0.89 in one epoch and
    validation NDCG@10 fell from 0.019 (with the offset it rose to 0.061 in nine epochs).
    The same remedy as RetinaNet's prior bias (Lin et al., ICCV 2017). A constant shift of
    every logit, so the scores a model can reach, and the ranking, are unchanged; one negative
    at t = 0 gives log(1/1) = 0, plain BCE.
    """

    def __init__(self, n_items, n_negatives, calibration):
        self.n_items = n_items
        self.n_negatives = n_negatives
        self.beta = gbce_beta(n_negatives, n_items - 1, calibration)
        self.prior_logit = math.log(self.beta / n_negatives)

    def __call__(self, hidden, targets, item_table, negatives=None):
        return self.loss_with(self.draw_negatives(targets), hidden, targets, item_table)

    def draw_negatives(self, targets):
        """``[P] -> [P, k]`` items uniform over ``1..n_items-1`` without each row's target."""
        # Draw among the n_items - 2 other ids and step over the target: exact, no rejection loop.
        drawn = torch.randint(1, self.n_items - 1, (len(targets), self.n_negatives), device=targets.device)
        return drawn + (drawn >= targets.unsqueeze(1)).long()

    def loss_with(self, negatives, hidden, targets, item_table):
        """The loss against the per-position negatives ``negatives`` ``[P, k]``."""
        target_logits = (hidden * item_table(targets)).sum(-1) + self.prior_logit  # [P]
        negative_logits = torch.einsum("ph,pkh->pk", hidden, item_table(negatives)) + self.prior_logit  # [P, k]
        # log σ(s)^β = β log σ(s) = -β softplus(-s), stable for any s.
        per_position = self.beta * F.softplus(-target_logits) + F.softplus(negative_logits).sum(-1)
        return per_position.mean()


class SampledNegativeBCE:
    """``bce``: ``[P, H] -> scalar``, binary cross-entropy of each target (label 1) and of its
    loader-drawn ``negatives`` ``[P, n]`` (label 0), summed per position, averaged over positions."""

    def __call__(self, hidden, targets, item_table, negatives=None):
        target_logits = (hidden * item_table(targets)).sum(-1)  # [P]
        negative_logits = (hidden.unsqueeze(1) * item_table(negatives)).sum(-1)  # [P, n]
        target_loss = F.binary_cross_entropy_with_logits(target_logits, torch.ones_like(target_logits), reduction="sum")
        negative_loss = F.binary_cross_entropy_with_logits(negative_logits, torch.zeros_like(negative_logits), reduction="sum")
        return (target_loss + negative_loss) / hidden.size(0)


class BPR:
    """``bpr``: ``[P, H] -> scalar``, RecBole's BPR loss against the first loader-drawn negative
    of each position, ``-log(γ + σ(s⁺ - s⁻))``."""

    GAMMA = 1e-10  # RecBole's BPRLoss

    def __call__(self, hidden, targets, item_table, negatives=None):
        target_logits = (hidden * item_table(targets)).sum(-1)
        negative_logits = (hidden * item_table(negatives[:, 0])).sum(-1)
        return -torch.log(self.GAMMA + torch.sigmoid(target_logits - negative_logits)).mean()


def training_item_counts(dataset):
    """``[n_items]`` how often each item is a next-item target in a RecBole sequential
    training split (one row per target): the distribution ``popularity`` sampling draws from."""
    return torch.bincount(dataset.inter_feat[dataset.iid_field], minlength=dataset.item_num)


def next_item_loss(name, config, n_items, item_counts=None):
    """The loss called ``name`` (``ce``, ``sampled_softmax``, ``gbce``, ``bce``, ``bpr``) over
    ``n_items`` item ids (padding included), with the sampling keys of ``config``.
    ``item_counts``: a function giving the ``[n_items]`` counts popularity sampling draws
    from (:func:`training_item_counts`), called only when it does."""
    if name in SAMPLED_LOSSES:
        check_negatives_fit(config, n_items)
    if name == "sampled_softmax":
        counts = None
        if config["loss_sampling"] == "popularity":
            if item_counts is None:
                raise ValueError("popularity sampling needs the training data's item counts")
            counts = item_counts()
        return SampledSoftmax(NegativeSampler(n_items, counts), config["loss_negatives"])
    if name == "gbce":
        return GeneralisedBCE(n_items, config["loss_negatives"], config["gbce_t"])
    if name == "ce":
        return FullSoftmax(config["ce_chunk_rows"])
    return {"bce": SampledNegativeBCE, "bpr": BPR}[name]()


def check_config(config, losses_by_key):
    """Raise :class:`ConfigError` for sampling keys that cannot work with the losses a run
    trains with, ``{key: loss name}`` (e.g. ``{"pretrain_loss": "gbce"}``); the catalogue
    bound is checked with the data (:func:`check_negatives_fit`)."""
    negatives, sampling, calibration = config["loss_negatives"], config["loss_sampling"], config["gbce_t"]
    check_integer("loss_negatives", negatives, 1)
    check_choice("loss_sampling", sampling, SAMPLINGS)
    check_integer("ce_chunk_rows", config["ce_chunk_rows"], 0, " (0: the whole batch at once)")
    if isinstance(calibration, bool) or not isinstance(calibration, (int, float)) or not 0 <= calibration <= 1:
        raise ConfigError(f"gbce_t={calibration!r} must be a number between 0 and 1")
    if "gbce" in losses_by_key.values() and sampling != "uniform":
        raise ConfigError(
            f"gbce draws uniform negatives (its calibration assumes them), not loss_sampling={sampling}; "
            "set loss_sampling=uniform or use sampled_softmax"
        )
    full = [key for key, name in losses_by_key.items() if name == "ce"]
    if config["sparse_item_gradients"] and full:
        # The full softmax multiplies by the whole table: its gradient is dense.
        raise ConfigError(
            f"sparse_item_gradients=True needs losses that score some items only, not {full[0]}=ce (every item); "
            f"set {full[0]} to sampled_softmax or gbce, or sparse_item_gradients=False"
        )


def check_negatives_fit(config, n_items):
    """Raise :class:`ConfigError` when ``loss_negatives`` exceeds the items a target has as
    negatives (``n_items`` counts the padding id)."""
    others = n_items - 2
    if config["loss_negatives"] > others:
        raise ConfigError(
            f"loss_negatives={config['loss_negatives']} exceeds the {others} items other than a target in "
            f"{config['dataset']}; lower loss_negatives"
        )
