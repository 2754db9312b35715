"""The run record: one schema, one reader and writer, explicit migration of older shapes,
and per-user test results kept as hit ranks."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from recbole_recgpt.collector import TopkCollector
from recbole_recgpt.record import SCHEMA_VERSION, RunRecord, hit_ranks
from tests.conftest import REPO

RUNS = sorted((REPO / "results" / "runs").glob("*/*/seed*.json"))

PHASES = {
    "pretrain": {"epochs": 2, "train_seconds": 1.5, "valid_seconds": 0.5, "wall_seconds": 2.0,
                 "valid_curve": [[0, 0.1], [1, 0.2]], "checkpoint": "saved/a-pretrain.pth"},
    "finetune": {"epochs": 3, "train_seconds": 3.0, "valid_seconds": 1.0, "wall_seconds": 4.0,
                 "valid_curve": [[0, 0.25], [1, 0.3], [2, 0.28]], "checkpoint": "saved/a-finetune.pth"},
}


def a_record(**fields):
    return RunRecord(
        dataset="amazon-beauty", model="RecGPT", variant="RecGPT", seed=2020, trainer="RecGPT",
        best_valid_result={"hit@10": 0.5, "ndcg@10": 0.3}, test_result={"hit@10": 0.4, "ndcg@10": 0.25},
        phases=PHASES, wall_s=6.5, threads=2, torch_version="2.13.0", parameters={"trainable": 10, "frozen": 10},
        git="abc1234", git_dirty=True, config={"valid_metric": "NDCG@10", "seed": 2020}, **fields,
    )


def test_a_record_round_trips_through_its_file_with_its_fields_in_a_stable_order(tmp_path):
    record = a_record(test_hit_ranks={"topk": 10, "users": [[1, 3]], "ranks": "0-9"})
    record.write(tmp_path / "run.json")
    again = RunRecord.read(tmp_path / "run.json")
    assert again == record
    data = json.loads((tmp_path / "run.json").read_text())
    # Schema first, then every field in the class's order, known or null.
    assert list(data) == ["schema", *(spec.name for spec in dataclasses.fields(RunRecord))]
    assert list(data)[:6] == ["schema", "dataset", "model", "variant", "seed", "trainer"]
    assert data["derived_from"] is None and data["world_size"] == 1
    assert data["schema"] == SCHEMA_VERSION
    assert (tmp_path / "run.json").read_text() == again.to_json()
    assert RunRecord.read(tmp_path / "missing.json") is None


def test_what_a_record_derives_it_reads_off_its_fields():
    record = a_record()
    assert record.epochs == "2+3" and record.total_epochs == 5
    assert record.phase_epochs == {"pretrain": 2, "finetune": 3}
    assert record.valid_curve == [(1, 0.1, "pretrain"), (2, 0.2, "pretrain"), (3, 0.25, "finetune"),
                                  (4, 0.3, "finetune"), (5, 0.28, "finetune")]
    assert record.best_valid_score == 0.3  # valid_metric NDCG@10 of best_valid_result
    assert record.revision == "abc1234-dirty"


def test_a_schema_1_store_record_migrates_with_its_epochs_and_dirty_revision_checked():
    old = {"dataset": "yelp", "variant": "SASRec", "model": "SASRec", "seed": 2021, "trainer": "whole-sequence",
           "best_valid_result": {"ndcg@10": 0.0384}, "test_result": {"ndcg@10": 0.038}, "epochs": "2+3",
           "phases": PHASES, "wall_s": 3153.0, "threads": 2, "git": "638ddda-dirty", "command": "python run_recgpt.py",
           "settings_hash": "f00", "checkpoint": "saved/a.pth", "config": {"seed": 2021}, "finished": "2026-12-03",
           "resumed": False, "campaign_command": "python -m benchmarks.compare", "parameters": {"trainable": 7}}
    record = RunRecord.from_dict(old)
    assert (record.git, record.git_dirty, record.epochs, record.seed) == ("638ddda", True, "2+3", 2021)
    assert record.torch_version is None and record.test_hit_ranks is None  # not known then
    assert record.to_dict()["schema"] == SCHEMA_VERSION and "epochs" not in record.to_dict()
    assert RunRecord.from_dict({**old, "git": "638ddda"}).git_dirty is False
    with pytest.raises(ValueError, match="epochs '9' are not its phases'"):
        RunRecord.from_dict({**old, "epochs": "9"})
    with pytest.raises(ValueError, match="keys no schema-2 record has: colour"):
        RunRecord.from_dict({**old, "colour": "red"})
    with pytest.raises(ValueError, match="newer than this code's"):
        RunRecord.from_dict({**record.to_dict(), "schema": SCHEMA_VERSION + 1})


def test_a_schema_1_result_file_migrates_its_seed_and_drops_the_derived_best_score():
    old = {"model": "SASRec", "dataset": "ml-100k", "best_valid_score": 0.3,
           "best_valid_result": {"ndcg@10": 0.3}, "test_result": {"ndcg@10": 0.2}, "phases": PHASES,
           "checkpoint": "saved/a.pth", "parameters": {"trainable": 5, "frozen": 0}, "world_size": 2,
           "config": {"seed": 7, "valid_metric": "NDCG@10"}}
    record = RunRecord.from_dict(old)
    assert (record.seed, record.world_size, record.best_valid_score, record.variant) == (7, 2, 0.3, None)


@pytest.mark.parametrize("path", RUNS, ids=[str(path.relative_to(REPO / "results" / "runs")) for path in RUNS])
def test_every_committed_record_loads_and_is_written_back_as_it_is(path):
    record = RunRecord.read(path)
    assert record.dataset == path.parents[1].name and record.variant == path.parent.name
    assert f"seed{record.seed}.json" == path.name
    assert path.read_text() == record.to_json()


def test_the_committed_store_is_all_there():
    assert len(RUNS) >= 123


# Three users' rec.topk rows (k = 4, then the number of positives): user 5's positive is
# ranked first, user 2's third, user 3's not in the top 4.
TOPK = np.array([[1, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 1, 0, 1]])
USERS = np.array([5, 3, 2])


def test_hit_ranks_keep_each_users_rank_in_user_order_and_give_ndcg_and_hit():
    kept = hit_ranks(USERS, TOPK)
    assert kept == {"topk": 4, "users": [[2, 3], [5, 5]], "ranks": "2-0"}
    users, metrics = a_record(test_hit_ranks=kept).per_user_test(k=4)
    assert users.tolist() == [2, 3, 5]
    assert metrics["hit@4"].tolist() == [1.0, 0.0, 1.0]
    assert metrics["ndcg@4"] == pytest.approx([0.5, 0.0, 1.0])  # 1 / log2(2 + 2), none, 1 / log2(0 + 2)
    _, top_2 = a_record(test_hit_ranks=kept).per_user_test(k=2)
    assert top_2["hit@2"].tolist() == [0.0, 0.0, 1.0]  # rank 2 is outside the top 2
    assert a_record(test_hit_ranks=kept).per_user_test(k=5) is None  # only 4 ranks were kept
    assert a_record().per_user_test() is None


def test_hit_ranks_are_kept_only_when_each_user_has_one_positive_once():
    two_positives = TOPK.copy()
    two_positives[0, -1] = 2
    assert hit_ranks(USERS, two_positives) is None
    assert hit_ranks(np.array([5, 5, 2]), TOPK) is None
    assert hit_ranks(USERS[:2], TOPK) is None


def test_the_collector_keeps_the_last_evaluations_users_and_top_k_rows():
    from recbole.data.interaction import Interaction

    config = {"USER_ID_FIELD": "user_id", "metrics": ["Hit", "NDCG"], "topk": [2], "metric_decimal_place": 4,
              "eval_args": {"order": "TO", "mode": {"valid": "full", "test": "full"}}, "valid_metric": "NDCG@2",
              "device": torch.device("cpu")}
    collector = TopkCollector(_Config(config))
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.5], [0.0, 0.2, 0.8, 0.6]])  # top 2: items 1, 3; items 2, 3
    collector.eval_batch_collect(scores, Interaction({"user_id": torch.tensor([4, 1])}),
                                 torch.tensor([0, 1]), torch.tensor([3, 1]))
    collector.get_data_struct()
    users, rows = collector.per_user_rows()
    assert users.tolist() == [4, 1] and rows.tolist() == [[0, 1, 1], [0, 0, 1]]
    assert hit_ranks(users, rows) == {"topk": 2, "users": [[1, 1], [4, 4]], "ranks": "-1"}
    assert "rec.users" not in collector.data_struct  # the next evaluation starts afresh


class _Config(dict):
    """The few config keys RecBole's Collector reads, as a mapping that also answers ``in``."""

    final_config_dict = property(lambda self: self)


def test_a_record_reads_like_the_dict_run_recgpt_returned_before():
    record = RunRecord(dataset="d", model="SASRec", test_result={"ndcg@10": 0.5}, config={"valid_metric": "NDCG@10"},
                       best_valid_result={"ndcg@10": 0.25})
    assert record["test_result"]["ndcg@10"] == 0.5 and record["best_valid_score"] == 0.25
    with pytest.raises(KeyError):
        record["no_such_key"]
