"""The evaluation collector hands RecBole's evaluator exactly what RecBole's own would."""

import pytest
import torch

from recbole.evaluator import Collector, Evaluator

from recbole_recgpt.collector import TopkCollector, topk_hits
from recbole_recgpt.ranking import TopItems


def config(metrics):
    return {"metrics": metrics, "topk": [1, 3, 5], "eval_args": {"mode": {"valid": "full", "test": "full"}},
            "device": torch.device("cpu"), "metric_decimal_place": 6, "USER_ID_FIELD": "user_id"}


def batch(seed, n_users=7, n_items=12):
    """Scores with ties, and positives: none for one user, two for another, one pair listed twice."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (n_users, n_items), generator=generator).float()
    positive_u = torch.tensor([0, 1, 1, 2, 2, 3, 5, 6])
    positive_i = torch.tensor([3, 0, 7, 5, 5, 11, 2, 9])
    return scores, positive_u, positive_i


def test_topk_hits_by_hand():
    topk_idx = torch.tensor([[4, 2, 9], [1, 0, 3], [5, 6, 7]])
    positive_u, positive_i = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([9, 3, 2, 2, 8])
    assert topk_hits(topk_idx, positive_u, positive_i, n_items=10).tolist() == [
        [0, 0, 1, 2],  # item 9 ranked third; items 9 and 3 are its positives
        [0, 0, 0, 2],  # item 2 listed twice counts once, item 8 is not ranked
        [0, 0, 0, 0],  # no positives
    ]


@pytest.mark.parametrize("metrics", [["Hit", "NDCG"], ["Hit", "NDCG", "MRR", "Recall", "Precision", "GAUC",
                                                        "ItemCoverage"]])
def test_same_data_and_metrics_as_recboles_collector(metrics):
    ours, recboles = TopkCollector(config(metrics)), Collector(config(metrics))
    for seed in range(3):
        scores, positive_u, positive_i = batch(seed)
        for collector in (ours, recboles):
            collector.eval_batch_collect(scores, None, positive_u, positive_i)
    mine, theirs = ours.get_data_struct(), recboles.get_data_struct()
    for struct in (mine, theirs):
        struct.set("data.num_items", 12)
    for key in ("rec.topk", "rec.meanrank", "rec.items"):
        if key in theirs:
            assert torch.equal(mine.get(key), theirs.get(key)), key
    evaluator = Evaluator(config(metrics))
    # The user without positives makes Recall NaN, for RecBole's collector as for ours.
    assert dict(evaluator.evaluate(mine)) == pytest.approx(dict(evaluator.evaluate(theirs)), rel=0, abs=0, nan_ok=True)


def test_top_k_lists_give_the_data_of_full_sort_scores():
    metrics = ["Hit", "NDCG", "MRR", "ShannonEntropy"]
    from_lists, from_scores = TopkCollector(config(metrics)), TopkCollector(config(metrics))
    assert from_lists.reads_top_k_only
    for seed in range(3):
        scores, positive_u, positive_i = batch(seed)
        scores += torch.rand(scores.shape, generator=torch.Generator().manual_seed(seed))  # no ties
        from_scores.eval_batch_collect(scores, None, positive_u, positive_i)
        lists = TopItems(scores.topk(5, dim=1).indices, scores.size(1))
        from_lists.eval_batch_collect(lists, None, positive_u, positive_i)
    mine, theirs = from_lists.get_data_struct(), from_scores.get_data_struct()
    for key in ("rec.topk", "rec.items"):
        assert torch.equal(mine.get(key), theirs.get(key)), key


def test_metrics_that_read_scores_need_the_scores():
    assert not TopkCollector(config(["Hit", "GAUC"])).reads_top_k_only
    assert not TopkCollector(config(["AUC"])).reads_top_k_only
