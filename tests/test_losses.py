"""The next-item losses (recbole_recgpt.model.losses): known answers on a hand-made batch, the
sampling they rely on, their config checks, and every phase that trains with them.

The hand-made batch: 2 supervised positions over 4 items (ids 1-4, 0 is padding), H = 2.
Position 1 has hidden state [1, 0] and target 1; position 2 has [0, 1] and target 2. The
table gives item 1 the logit ln 3 at position 1 and item 2 the logit ln 4 at position 2;
every other logit is 0. So every softmax below is a ratio of small integers.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.model.losses import (
    BPR, FullSoftmax, GeneralisedBCE, NegativeSampler, SampledNegativeBCE, SampledSoftmax, gbce_beta, next_item_loss,
    training_item_counts,
)
from recbole_recgpt.quick_start import build, check_before_loading, run_recgpt
from recbole_recgpt.trainer.phased import SplitOptimizer
from tests.conftest import TINY_CONFIG, TINY_DATA

LN = math.log
HIDDEN = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # [P=2, H=2]
TARGETS = torch.tensor([1, 2])


@pytest.fixture
def item_table():
    table = nn.Embedding(5, 2, padding_idx=0)
    with torch.no_grad():
        table.weight.zero_()
        table.weight[1, 0] = LN(3)  # position 1 scores its target 1 at ln 3
        table.weight[2, 1] = LN(4)  # position 2 scores its target 2 at ln 4
    return table


def loss_value(loss, item_table, **kwargs):
    return loss(HIDDEN, TARGETS, item_table, **kwargs).item()


# Known answers


def test_full_softmax_is_the_cross_entropy_over_every_id(item_table):
    # Position 1: e^ln3 / (e^ln3 + 4 e^0) = 3/7 (the padding column counts, as it always has);
    # position 2: 4/8.
    assert loss_value(FullSoftmax(), item_table) == pytest.approx((LN(7 / 3) + LN(2)) / 2)


def test_full_softmax_in_chunks_has_the_known_value_too(item_table):
    assert loss_value(FullSoftmax(rows_per_chunk=1), item_table) == pytest.approx((LN(7 / 3) + LN(2)) / 2)


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 64])
def test_full_softmax_in_chunks_gives_the_loss_and_gradients_of_one_pass(rows_per_chunk):
    torch.manual_seed(0)
    hidden = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    table = nn.Embedding(40, 8, padding_idx=0).double()
    targets = torch.randint(1, 40, (50,))
    whole = FullSoftmax()(hidden, targets, table)
    (2 * whole).backward()  # a gradient other than 1 reaches the loss's backward
    expected = whole.detach(), hidden.grad.clone(), table.weight.grad.clone()
    hidden.grad = table.weight.grad = None
    chunked = FullSoftmax(rows_per_chunk)(hidden, targets, table)
    (2 * chunked).backward()
    for got, want in zip((chunked.detach(), hidden.grad, table.weight.grad), expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_uniform_sampled_softmax_is_the_softmax_over_the_target_and_the_shared_negatives(item_table):
    loss = SampledSoftmax(NegativeSampler(5), n_negatives=2)
    # Shared negatives 3 and 1. Position 1: item 1 is its own target, masked, so 3/(3+1);
    # position 2: 4/(4+1+1). Uniform log-Q is one constant for every candidate: no effect.
    value = loss.loss_with(torch.tensor([3, 1]), HIDDEN, TARGETS, item_table).item()
    assert value == pytest.approx((LN(4 / 3) + LN(6 / 4)) / 2)


def test_a_shared_negative_equal_to_a_rows_target_is_masked_for_that_row_only(item_table):
    loss = SampledSoftmax(NegativeSampler(5), n_negatives=2)
    # Negatives 1 and 2: each is one row's target and an ordinary negative for the other row.
    value = loss.loss_with(torch.tensor([1, 2]), HIDDEN, TARGETS, item_table).item()
    assert value == pytest.approx((LN(4 / 3) + LN(5 / 4)) / 2)
    # A row whose every negative is its target is left with the target alone: loss 0, not NaN.
    assert loss.loss_with(torch.tensor([1, 1]), HIDDEN[:1], TARGETS[:1], item_table).item() == 0


def test_popularity_sampled_softmax_subtracts_log_q_from_every_candidate_target_included(item_table):
    # q = counts / 8: items 1 and 2 at 1/8, item 3 at 2/8, item 4 at 4/8. Shared negatives 3, 4.
    loss = SampledSoftmax(NegativeSampler(5, torch.tensor([0, 1, 1, 2, 4])), n_negatives=2)
    value = loss.loss_with(torch.tensor([3, 4]), HIDDEN, TARGETS, item_table).item()
    # Position 1: exp(ln3 + ln8) = 24 against exp(0 + ln4) = 4 and exp(0 + ln2) = 2 -> 24/30;
    # position 2: 32 against 4 and 2 -> 32/38.
    assert value == pytest.approx((LN(30 / 24) + LN(38 / 32)) / 2)
    uncorrected = (LN(5 / 3) + LN(6 / 4)) / 2  # 3/(3+1+1) and 4/(4+1+1)
    assert value != pytest.approx(uncorrected)


def test_gbce_beta_is_the_papers():
    # alpha = k / (|I| - 1); beta = alpha (t (1 - 1/alpha) + 1/alpha).
    assert gbce_beta(1, 4, 0.75) == pytest.approx(0.5)  # alpha = 1/3: (1/3)(0.75 * -2 + 3)
    assert gbce_beta(256, 10_001, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(256, 10_001, 1.0) == pytest.approx(256 / 10_000)  # t = 1: beta = alpha


def test_gbce_raises_the_target_term_to_beta_and_offsets_every_logit_by_the_prior(item_table):
    # 4 items, 1 negative per position, t = 0.75: beta = 0.5 (above), so every logit gets
    # log(beta / k) = -ln 2. Negatives 3 and 1, both scored 0 - ln 2:
    # -log(1 - sigmoid(-ln 2)) = ln(3/2) each. Targets: -0.5 log sigmoid(ln 3 - ln 2) = 0.5 ln(5/3),
    # -0.5 log sigmoid(ln 4 - ln 2) = 0.5 ln(3/2).
    loss = GeneralisedBCE(n_items=5, n_negatives=1, calibration=0.75)
    assert loss.prior_logit == pytest.approx(-LN(2))
    value = loss.loss_with(torch.tensor([[3], [1]]), HIDDEN, TARGETS, item_table).item()
    assert value == pytest.approx((0.5 * LN(5 / 3) + LN(3 / 2) + 0.5 * LN(3 / 2) + LN(3 / 2)) / 2)


def test_gbce_with_one_negative_at_t_0_is_the_binary_cross_entropy_of_bce(item_table):
    # beta = 1 and k = 1: the prior log(1/1) is 0.
    negatives = torch.tensor([[3], [1]])
    plain = GeneralisedBCE(n_items=5, n_negatives=1, calibration=0.0).loss_with(negatives, HIDDEN, TARGETS, item_table)
    bce = SampledNegativeBCE()(HIDDEN, TARGETS, item_table, negatives=negatives)
    torch.testing.assert_close(plain, bce)
    assert bce.item() == pytest.approx((LN(4 / 3) + LN(2) + LN(5 / 4) + LN(2)) / 2)


def test_bce_sums_the_binary_cross_entropy_of_every_negative(item_table):
    # Negatives all scored 0: ln 2 each; targets ln(4/3) and ln(5/4) as above.
    bce = SampledNegativeBCE()(HIDDEN, TARGETS, item_table, negatives=torch.tensor([[3, 4], [1, 4]]))
    assert bce.item() == pytest.approx((LN(4 / 3) + 2 * LN(2) + LN(5 / 4) + 2 * LN(2)) / 2)


@pytest.mark.parametrize("n_negatives, calibration", [(256, 0.75), (16, 0.0), (3, 1.0)])
def test_an_untrained_gbce_model_feels_no_pull_to_shift_every_item_alike(n_negatives, calibration):
    # Every item at the same embedding c (here 0) scores every position alike. The gradient
    # summed over the table is the loss's pull on c, the direction in which all items collapse
    # together (without the prior, k negatives at sigmoid(0) outweigh the target's beta);
    # at the prior's log-odds it is zero.
    table = nn.Embedding(1001, 1)
    with torch.no_grad():
        table.weight.zero_()
    loss = GeneralisedBCE(n_items=1001, n_negatives=n_negatives, calibration=calibration)
    loss(torch.ones(64, 1), torch.full((64,), 7), table).backward()
    grad = table.weight.grad.squeeze(1)
    assert grad.sum().item() == pytest.approx(0.0, abs=1e-6)
    # The target and its negatives are still pulled apart: the target up, the others down.
    assert grad[7] < 0 and (grad[torch.arange(1001) != 7] >= 0).all()


def test_bpr_is_recboles_on_the_first_negative(item_table):
    # -log sigmoid(ln 3 - 0) = ln(4/3); -log sigmoid(ln 4 - 0) = ln(5/4).
    value = loss_value(BPR(), item_table, negatives=torch.tensor([[3, 4], [1, 4]]))
    assert value == pytest.approx((LN(4 / 3) + LN(5 / 4)) / 2)


# Sampling


def test_uniform_negatives_are_real_items_drawn_evenly():
    torch.manual_seed(0)
    drawn = NegativeSampler(5).sample((40_000,), torch.device("cpu"))
    frequencies = torch.bincount(drawn, minlength=5) / len(drawn)
    torch.testing.assert_close(frequencies, torch.tensor([0.0, 0.25, 0.25, 0.25, 0.25]), atol=0.01, rtol=0)


def test_popularity_negatives_follow_the_counts_and_never_padding():
    torch.manual_seed(0)
    drawn = NegativeSampler(5, torch.tensor([7, 1, 1, 2, 4])).sample((40_000,), torch.device("cpu"))
    frequencies = torch.bincount(drawn, minlength=5) / len(drawn)
    torch.testing.assert_close(frequencies, torch.tensor([0.0, 1, 1, 2, 4]) / 8, atol=0.01, rtol=0)


def test_gbce_negatives_are_uniform_over_the_items_that_are_not_the_target():
    torch.manual_seed(0)
    drawn = GeneralisedBCE(n_items=5, n_negatives=10_000, calibration=0.75).draw_negatives(torch.tensor([2, 4]))
    for row, target in enumerate((2, 4)):
        frequencies = torch.bincount(drawn[row], minlength=5) / drawn.size(1)
        expected = torch.tensor([0.0 if item in (0, target) else 1 / 3 for item in range(5)])
        torch.testing.assert_close(frequencies, expected, atol=0.02, rtol=0)


def test_sampled_losses_repeat_under_the_same_seed(item_table):
    loss = SampledSoftmax(NegativeSampler(5), n_negatives=2)
    values = []
    for _ in range(2):
        torch.manual_seed(7)
        values.append([loss(HIDDEN, TARGETS, item_table).item() for _ in range(5)])
    assert values[0] == values[1] and len(set(values[0])) > 1


def test_training_counts_are_how_often_each_item_is_a_target(tiny_config):
    config = tiny_config()
    _, (train_data, _, _), model, _ = build(config)
    loader = UserSequenceDataLoader(config, train_data.dataset, shuffle=False)
    targets = torch.cat([batch[model.TARGET_SEQ][batch[model.TARGET_SEQ] > 0] for batch in loader])
    assert torch.equal(training_item_counts(train_data.dataset), torch.bincount(targets, minlength=model.n_items))


# Config checks


@pytest.mark.parametrize(
    "model, settings, expected",
    [
        ("RecGPT", {"finetune_loss": "bce"}, "finetune_loss='bce' is unknown; use one of ce, sampled_softmax, gbce"),
        ("RecGPT", {"pretrain_loss": "softmax"}, "pretrain_loss='softmax' is unknown; use one of ce, bce, sampled_softmax, gbce"),
        ("RecGPT", {"loss_negatives": 0}, "loss_negatives=0 must be an integer >= 1"),
        ("RecGPT", {"loss_sampling": "in_batch"}, "loss_sampling='in_batch' is unknown; use one of uniform, popularity"),
        ("RecGPT", {"gbce_t": 1.5}, "gbce_t=1.5 must be a number between 0 and 1"),
        ("RecGPT", {"ce_chunk_rows": -1}, "ce_chunk_rows=-1 must be an integer >= 0"),
        ("SASRec", {"ce_chunk_rows": 2.5}, "ce_chunk_rows=2.5 must be an integer >= 0"),
        ("RecGPT", {"pretrain_loss": "gbce", "loss_sampling": "popularity"}, "gbce draws uniform negatives"),
        ("SASRec", {"baseline_loss": "sampled", "baseline_trainer": "whole_sequence"},
         "baseline_loss='sampled' is unknown; use one of ce, sampled_softmax, gbce"),
        ("SASRec", {"baseline_loss": "gbce", "loss_type": "BPR"},
         "baseline_loss=gbce replaces the full softmax of loss_type=CE in SASRec or GRU4Rec, not SASRec with loss_type=BPR"),
        ("SASRec", {"baseline_loss": "sampled_softmax", "baseline_trainer": "recbole"},
         "baseline_loss='sampled_softmax' is a loss of the whole-sequence trainer, which this run (SASRec, "
         "baseline_trainer=recbole) does not use"),
        ("RecGPT", {"baseline_loss": "sampled_softmax"}, "RecGPT's losses are pretrain_loss and finetune_loss"),
        ("RecGPT", {"sparse_item_gradients": True},
         "sparse_item_gradients=True needs losses that score some items only, not pretrain_loss=ce (every item)"),
        ("RecGPT", {"sparse_item_gradients": True, "pretrain_loss": "gbce", "finetune_loss": "gbce", "weight_decay": 0.1},
         "steps the item table with SparseAdam, which has no weight decay: set weight_decay=0.0"),
        ("SASRec", {"sparse_item_gradients": True}, "needs losses that score some items only, not baseline_loss=ce"),
        ("SASRec", {"sparse_item_gradients": True, "baseline_loss": "gbce", "clip_grad_norm": {"max_norm": 5}},
         "SparseAdam, which gets gradients torch's clipping cannot measure: set clip_grad_norm=~"),
        ("Caser", {"sparse_item_gradients": True}, "sparse_item_gradients=True is read by RecGPT's trainer and the whole-"),
        ("BERT4Rec", {"sparse_item_gradients": True}, "BERT4Rec keeps its own loss: set sparse_item_gradients=False"),
    ],
)
def test_loss_settings_that_cannot_work_are_refused_in_one_line(tiny_config, model, settings, expected):
    with pytest.raises(ConfigError) as error:
        check_before_loading(tiny_config(model, **settings))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_more_negatives_than_the_catalogue_holds_are_refused_with_the_data(tiny_config):
    # The tiny set has 30 items: a target has 29 others.
    with pytest.raises(ConfigError, match="loss_negatives=30 exceeds the 29 items other than a target in tiny; lower"):
        build(tiny_config(finetune_loss="sampled_softmax", loss_negatives=30))


# Every phase trains with the one module


def test_full_softmax_gives_exactly_the_numbers_of_the_code_it_replaced(tiny_config):
    _, (train_data, _, _), model, _ = build(tiny_config())
    assert all(isinstance(loss, FullSoftmax) for loss in model.phase_losses.values())  # the defaults
    batch = next(iter(UserSequenceDataLoader(tiny_config(), train_data.dataset, shuffle=False)))
    model.eval()
    item_seq, targets, users = batch[model.ITEM_SEQ], batch[model.TARGET_SEQ], batch[model.USER_ID]
    # RecGPT's former _softmax_loss, verbatim.
    hidden = model.forward(item_seq, None, users)
    supervised = targets > 0
    former = F.cross_entropy(model.gpt.item_scores(hidden[supervised]), targets[supervised])
    assert torch.equal(model.calculate_loss(batch), former)


def test_recgpt_and_sasrec_train_with_the_full_softmax_in_chunks(tiny_config):
    for model_name in ("RecGPT", "SASRec"):
        config = tiny_config(model_name, ce_chunk_rows=8, epochs=1, **({"finetune_epochs": 1} if model_name == "RecGPT" else {}))
        _, (train_data, _, _), model, trainer = build(config)
        trainer.fit(train_data)
        losses = model.phase_losses.values() if model_name == "RecGPT" else [trainer.next_item_loss]
        assert all(isinstance(loss, FullSoftmax) and loss.rows_per_chunk == 8 for loss in losses)


def test_recgpt_trains_both_phases_with_sampled_softmax(tiny_data_path, tmp_path):
    settings = {**TINY_CONFIG, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path), "epochs": 1,
                "finetune_epochs": 1, "pretrain_loss": "sampled_softmax", "finetune_loss": "sampled_softmax",
                "loss_negatives": 8, "loss_sampling": "popularity"}
    result = run_recgpt("RecGPT", "tiny", config_dict=settings)
    assert set(result.phases) == {"pretrain", "finetune"}
    assert 0 < result.test_result["hit@10"] <= 1


def test_recgpt_pretrains_with_gbce_and_its_loss_falls(tiny_config):
    config = tiny_config(pretrain_loss="gbce", loss_negatives=8)
    _, (train_data, _, _), model, _ = build(config)
    assert isinstance(model.phase_losses["pretrain"], GeneralisedBCE)
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first = model.calculate_loss(batch).item()
    for _ in range(30):
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    assert model.calculate_loss(batch).item() < 0.5 * first


def test_sasrec_trains_with_sampled_softmax_and_sparse_item_gradients_under_the_whole_sequence_trainer(
    tiny_data_path, tmp_path
):
    settings = {**TINY_DATA, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path), "epochs": 1,
                "hidden_size": 16, "inner_size": 32, "baseline_loss": "sampled_softmax", "loss_negatives": 8,
                "sparse_item_gradients": True}
    result = run_recgpt("SASRec", "tiny", config_dict=settings)
    assert result.config["baseline_trainer"] == "whole_sequence"
    assert 0 < result.test_result["hit@10"] <= 1


def test_the_whole_sequence_trainer_scores_with_the_modules_loss(tiny_config):
    config = tiny_config("GRU4Rec", baseline_loss="gbce", loss_negatives=8)
    _, (train_data, _, _), model, trainer = build(config)
    trainer.use_training_data(train_data.dataset)
    assert isinstance(trainer.next_item_loss, GeneralisedBCE)
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, shuffle=False)))
    model.eval()  # no dropout: the negatives are the only draw
    torch.manual_seed(3)
    loss = trainer.whole_sequence_loss(batch)
    # The same draw, through the module directly on the GRU's per-position outputs.
    torch.manual_seed(3)
    hidden = model.dense(model.gru_layers(model.item_embedding(batch[model.ITEM_SEQ]))[0])
    targets = batch["target_" + model.ITEM_SEQ]
    expected = next_item_loss("gbce", config, model.n_items)(hidden[targets > 0], targets[targets > 0], model.item_embedding)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("sparse", [True, False])
def test_with_sparse_item_gradients_a_step_moves_only_the_rows_it_looked_up(tiny_config, sparse):
    config = tiny_config(pretrain_loss="sampled_softmax", loss_negatives=4, prompt_tuning=False, sparse_item_gradients=sparse)
    _, (train_data, _, _), model, trainer = build(config)
    optimizer = trainer._build_optimizer(params=model.parameters(), learning_rate=0.01)
    assert isinstance(optimizer, SplitOptimizer) == sparse
    table = model.gpt.item_embedding.weight
    batches = iter(UserSequenceDataLoader(config, train_data.dataset, shuffle=False))
    looked_up = []
    for batch in (next(batches), next(batches)):
        before = table.detach().clone()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        assert table.grad.is_sparse == sparse
        rows = table.grad.coalesce().indices()[0] if sparse else table.grad.abs().sum(1).nonzero()[:, 0]
        looked_up.append(torch.zeros(len(table), dtype=torch.bool).index_fill_(0, rows, True))
        optimizer.step()
    moved = (table.detach() != before).any(1)
    first_only = looked_up[0] & ~looked_up[1]
    assert first_only.any()
    if sparse:  # SparseAdam (lazy): the second step leaves every row it did not look up
        assert not (moved & ~looked_up[1]).any()
    else:  # dense Adam: the first step's momentum still moves the rows only it looked up
        assert moved[first_only].all()
