"""Rankings in bounded memory: item chunks with a running top-k give the lists one ``topk``
over every score gives, for evaluation, prompts, two-stage recall and recommendations."""

import pytest
import torch

from recbole_recgpt import ranking
from recbole_recgpt.quick_start import build
from recbole_recgpt.ranking import TopItems, excluded_lists, full_sort_top_k, top_k, top_k_of_scores


def t(rows):
    return torch.tensor(rows)


def test_padding_is_never_ranked():
    vectors, table = t([[1.0]]), t([[9.0], [1.0], [3.0], [2.0]])
    assert top_k(vectors, table, 2).tolist() == [[2, 3]]


def test_each_row_skips_its_own_excluded_items():
    vectors, table = t([[1.0], [1.0]]), t([[0.0], [5.0], [4.0], [3.0], [2.0]])
    excluded = t([[1, 0, 0], [2, 3, 0]])
    assert top_k(vectors, table, 2, excluded).tolist() == [[2, 3], [1, 4]]
    assert top_k(vectors, table, 2, excluded, scores_per_chunk=2).tolist() == [[2, 3], [1, 4]]


@pytest.fixture
def products(monkeypatch):
    """The ``(rows, items)`` of every score block the rankings compute."""
    shapes, mm = [], torch.mm

    def recording_mm(left, right, **kwargs):
        shapes.append((left.size(0), right.size(1)))
        return mm(left, right, **kwargs)

    monkeypatch.setattr(torch, "mm", recording_mm)
    return shapes


def equal_norms(n_items, width, generator):
    """Items of one norm: the norm bound never lets a row stop early, every item is scored."""
    table = torch.randn(n_items, width, generator=generator)
    return table / table.norm(dim=1, keepdim=True)


def test_no_more_scores_than_the_budget_exist_at_once(products):
    generator = torch.Generator().manual_seed(0)
    vectors, table = torch.randn(4, 8, generator=generator), equal_norms(1000, 8, generator)
    top_k(vectors, table, 5, scores_per_chunk=64)
    # 64 scores for 4 rows: 16 items a chunk, every item scored once.
    assert products[:2] == [(4, 16), (4, 16)] and len(products) == 63
    assert sum(items for _, items in products) == 1000
    # A chunk still holds k items when the budget is smaller than k per row.
    products.clear()
    top_k(vectors, table, 10, scores_per_chunk=8)
    assert products[0] == (4, 10)


def test_rows_are_ranked_in_blocks_each_against_the_whole_catalogue(monkeypatch, products):
    monkeypatch.setattr(ranking, "ROWS_PER_BLOCK", 4)
    generator = torch.Generator().manual_seed(0)
    vectors, table = torch.randn(10, 8, generator=generator), equal_norms(100, 8, generator)
    assert top_k(vectors, table, 3, scores_per_chunk=80).shape == (10, 3)
    # Blocks of 4, 4 and 2 rows, 80 // 4 = 20 items a chunk: the catalogue 5 chunks per block.
    assert products == [(4, 20)] * 5 + [(4, 20)] * 5 + [(2, 20)] * 5
    assert top_k(vectors[:0], table, 3).shape == (0, 3)


def test_a_row_stops_when_no_item_left_can_enter_its_list(products):
    # Ten items of norm 10 near the rows' direction lead; 990 of norm 0.01 cannot beat a row's
    # k-th best among them, so no row scores past the first chunk (50 items), the large ones'.
    generator = torch.Generator().manual_seed(2)
    direction = torch.ones(8)
    large = 0.3 * equal_norms(10, 8, generator) + direction / direction.norm()
    large = 10 * large / large.norm(dim=1, keepdim=True)
    table = torch.cat((torch.zeros(1, 8), large, 0.01 * equal_norms(990, 8, generator)))
    table = table[torch.cat((torch.zeros(1, dtype=torch.long), 1 + torch.randperm(1000, generator=generator)))]
    vectors = direction + 0.3 * torch.randn(6, 8, generator=generator)
    expected = top_k_of_scores(vectors @ table.t(), 3)
    assert torch.equal(top_k(vectors, table, 3, scores_per_chunk=6 * 50), expected)
    assert products == [(6, 50)]
    # A row whose list the small items do enter (all large ones excluded) scans on.
    products.clear()
    large = (table.norm(dim=1) > 1).nonzero().squeeze(1)
    excluded = large.repeat(6, 1)
    expected = top_k_of_scores(vectors @ table.t(), 3, excluded)
    assert torch.equal(top_k(vectors, table, 3, excluded, scores_per_chunk=6 * 50), expected)
    # Every item but padding, whose norm 0 puts it last, alone in a chunk no score can enter from.
    assert sum(items for _, items in products) == 1000


@pytest.fixture
def norm_orders(monkeypatch):
    """The item tables put in norm order, one entry per sort and copy."""
    made, norm_ordered = [], ranking._NormOrdered

    def counting(item_table):
        made.append(item_table.size(0))
        return norm_ordered(item_table)

    monkeypatch.setattr(ranking, "_NormOrdered", counting)
    return made


def test_rankings_that_share_a_catalogue_sort_it_once(norm_orders):
    generator = torch.Generator().manual_seed(3)
    vectors, table = torch.randn(6, 8, generator=generator), torch.randn(500, 8, generator=generator)
    expected = top_k_of_scores(vectors @ table.t(), 5)
    catalogue = ranking.Catalogue(table)
    for rows in (slice(0, 2), slice(2, 6)):
        assert torch.equal(top_k(vectors[rows], catalogue, 5, scores_per_chunk=100), expected[rows])
    assert norm_orders == [500]
    # A table, not a catalogue: each ranking sorts its own; one that fits a chunk sorts none.
    top_k(vectors, table, 5, scores_per_chunk=100)
    top_k(vectors, table, 5, scores_per_chunk=100)
    top_k(vectors, catalogue, 5)
    assert norm_orders == [500, 500, 500]


def test_a_gpu_ranks_all_rows_in_one_block_of_a_larger_budget():
    assert ranking.block_shape(4096, 20) == (256, 4096)
    assert ranking.block_shape(4096, 20, device_type="cuda") == (4096, 2**26 // 4096)
    assert ranking.block_shape(10, 20, scores_per_chunk=100, device_type="cuda") == (10, 20)  # never fewer than k


@pytest.mark.parametrize("rows_per_block", [1, 4, 1024])
@pytest.mark.parametrize("k", [1, 20])
@pytest.mark.parametrize("budget", [40, 333, 10**9])
def test_chunked_lists_are_the_lists_of_one_topk_over_every_score(monkeypatch, budget, k, rows_per_block):
    monkeypatch.setattr(ranking, "ROWS_PER_BLOCK", rows_per_block)
    generator = torch.Generator().manual_seed(1)
    vectors, table = torch.randn(6, 8, generator=generator), torch.randn(500, 8, generator=generator)
    excluded = torch.randint(0, 500, (6, 30), generator=generator)
    expected = top_k_of_scores(vectors @ table.t(), k, excluded)
    assert torch.equal(top_k(vectors, table, k, excluded, scores_per_chunk=budget), expected)


def test_a_row_whose_best_items_come_late_is_ranked_from_every_chunk():
    # Ten rows prefer the first items; row 3 alone prefers the catalogue's last items, so
    # after the first chunk only row 3 gains from a chunk (the pruned path), and then all do.
    table = torch.zeros(1001, 2)
    table[1:, 0] = torch.linspace(1.0, 0.0, 1000)
    table[1:, 1] = torch.linspace(0.0, 1.0, 1000)
    vectors = torch.tensor([[1.0, 0.0]] * 10)
    vectors[3] = torch.tensor([0.0, 1.0])
    expected = top_k_of_scores(vectors @ table.t(), 3)
    assert expected[3].tolist() == [1000, 999, 998] and expected[0].tolist() == [1, 2, 3]
    for k in (1, 3):
        assert torch.equal(top_k(vectors, table, k, scores_per_chunk=100), expected[:, :k])


def test_excluded_lists_from_recboles_history_index():
    rows, items = t([0, 2, 0, 2, 2]), t([7, 1, 3, 4, 5])
    assert excluded_lists((rows, items), 3).tolist() == [[7, 3, 0], [0, 0, 0], [1, 4, 5]]
    assert excluded_lists(None, 3) is None


def test_top_items_are_a_batch_of_users():
    assert len(TopItems(torch.zeros(4, 10, dtype=torch.long), 100)) == 4


NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "dropout_prob": 0.0}


@pytest.fixture
def small_chunks(monkeypatch):
    """Rank in chunks of a few items, so that the tiny catalogue spans many."""
    monkeypatch.setattr(ranking, "SCORES_PER_CHUNK", 16 * 10)


@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec", "BERT4Rec"])
def test_a_baselines_lists_are_the_top_of_its_full_sort_scores(tiny_config, small_chunks, model_name):
    config = tiny_config(model_name, **{k: v for k, v in NO_DROPOUT.items() if k in tiny_config(model_name)})
    _, (_, _, test_data), model, _ = build(config)
    model.eval()
    interaction = next(iter(test_data))[0]
    history = interaction[model.ITEM_SEQ]
    with torch.no_grad():
        expected = top_k_of_scores(model.full_sort_predict(interaction), 10, history)
        assert torch.equal(full_sort_top_k(model, interaction, 10, history), expected)


@pytest.mark.parametrize("overrides", [
    {}, {"eval_mask_history": True}, {"two_stage": False}, {"stage2_extension": 3}, {"prompt_exclude_history": True},
])
def test_recgpts_lists_are_the_top_of_its_full_sort_scores_in_every_phase(tiny_config, small_chunks, overrides):
    config = tiny_config(**overrides)
    _, (_, _, test_data), model, _ = build(config)
    model.eval()
    interaction = next(iter(test_data))[0]
    # The caller skips what its protocol skips, as evaluation and recommendation do.
    skipped = model.protocol.excluded(interaction[model.ITEM_SEQ])
    with torch.no_grad():
        for phase in ("pretrained", "prompt-tuned"):
            if phase == "prompt-tuned":
                model.start_prompt_tuning()
            expected = top_k_of_scores(model.full_sort_predict(interaction), 10)
            assert torch.equal(full_sort_top_k(model, interaction, 10, skipped), expected), phase


def test_the_frozen_writers_norm_order_is_made_once_per_writer(tiny_config, small_chunks, norm_orders):
    _, (_, _, test_data), model, _ = build(tiny_config())
    model.eval()
    interaction = next(iter(test_data))[0]
    model.start_prompt_tuning()
    n = model.n_items
    with torch.no_grad():
        # One evaluation batch (several length groups, both recall stages): one sort for the
        # writer's prompts, one for the ranking.
        model.full_sort_top_k(interaction, 10)
        assert norm_orders == [n, n]
        model.prompt_memory.clear()  # the writer writes again: its norm order is kept
        model.full_sort_top_k(interaction, 10)
        assert norm_orders == [n, n, n]
        # New weights for the writer (prompt-tuning starts again from a trained network).
        model.gpt.item_embedding.weight.add_(torch.randn_like(model.gpt.item_embedding.weight))
        model.start_prompt_tuning()
        lists = model.full_sort_top_k(interaction, 10)
        assert norm_orders == [n] * 5
        model.prompt_memory.clear()
        model._writer_catalogue = None
        assert torch.equal(model.full_sort_top_k(interaction, 10), lists)  # what a fresh norm order gives


def test_recgpt_skips_what_its_caller_names_once(tiny_config, monkeypatch):
    """Under eval_mask_history the evaluator names the history items; RecGPT's ranking skips
    them as named, not a second copy from its own protocol."""
    from recbole_recgpt.model import recgpt

    _, (_, _, test_data), model, _ = build(tiny_config(eval_mask_history=True, two_stage=False))
    model.eval()
    interaction = next(iter(test_data))[0]
    history = interaction[model.ITEM_SEQ]
    skipped = []
    monkeypatch.setattr(recgpt, "top_k", lambda vectors, table, k, excluded: skipped.append(excluded) or
                        top_k(vectors, table, k, excluded))
    with torch.no_grad():
        model.full_sort_top_k(interaction, 10, history)
    assert sum(len(rows) for rows in skipped) == len(history)
    assert all(rows.size(1) == history.size(1) for rows in skipped)


@pytest.mark.parametrize("model_name", ["RecGPT", "SASRec"])
@pytest.mark.parametrize("mask_history", [False, True])
def test_evaluation_from_lists_gives_the_metrics_of_full_sort_scores(tiny_config, small_chunks, model_name, mask_history):
    config = tiny_config(model_name, eval_mask_history=mask_history, metrics=["Hit", "NDCG", "MRR", "Precision"])
    _, (_, _, test_data), model, trainer = build(config)
    if model_name == "RecGPT":
        model.start_prompt_tuning()
    assert trainer.eval_collector.reads_top_k_only
    from_lists = trainer.evaluate(test_data, load_best_model=False)
    trainer.eval_collector.reads_top_k_only = False
    from_scores = trainer.evaluate(test_data, load_best_model=False)
    assert from_lists == from_scores
    assert from_lists["hit@10"] > 0


def test_metrics_that_read_every_score_are_computed_from_scores(tiny_config):
    config = tiny_config("SASRec", metrics=["Hit", "GAUC"], valid_metric="Hit@10")
    _, (_, _, test_data), _, trainer = build(config)
    assert not trainer.eval_collector.reads_top_k_only
    assert 0 < trainer.evaluate(test_data, load_best_model=False)["gauc"] <= 1
