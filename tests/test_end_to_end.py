"""End to end through the public entry points, on a slice of real data."""

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import DATASETS, REPO, TINY_CONFIG, write_inter

SLICE_USERS = 400
SMALL = ["--hidden_size=32", "--inner_size=64", "--eval_batch_size=256"]


@pytest.fixture(scope="module")
def beauty_slice(tmp_path_factory):
    """The first 400 users of amazon-beauty (about 3,500 interactions), as its own dataset."""
    source = DATASETS / "amazon-beauty" / "amazon-beauty.inter"
    sequences = {}
    with open(source) as lines:
        next(lines)
        for line in lines:
            user, item, _ = line.rstrip("\n").split("\t")
            if int(user) > SLICE_USERS:
                break
            sequences.setdefault(user, []).append(item)
    data_path = tmp_path_factory.mktemp("slice")
    write_inter(data_path, "beauty-slice", sequences)
    (data_path / "slice.yaml").write_text(
        "load_col:\n  inter: [user_id, item_id, timestamp]\nuser_inter_num_interval: '[0,inf)'\n"
        "item_inter_num_interval: '[0,inf)'\n"
    )
    return data_path


def run_cli(script, *args, cwd):
    completed = subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_recgpt_runs_both_phases_on_real_data_and_writes_its_result(beauty_slice, tmp_path):
    result_file = tmp_path / "result.json"
    run_cli(
        "run_recgpt.py", "--dataset=beauty-slice", f"--data_path={beauty_slice}",
        f"--config_files={beauty_slice / 'slice.yaml'}", "--epochs=1", "--finetune_epochs=1",
        f"--result_file={result_file}", *SMALL, cwd=tmp_path,
    )
    result = json.loads(result_file.read_text())
    assert set(result["phases"]) == {"pretrain", "finetune"}
    for phase in result["phases"].values():
        assert phase["epochs"] == 1 and phase["train_seconds"] > 0
        [(epoch, score)] = phase["valid_curve"]
        assert epoch == 0 and 0 <= score <= 1
    expected = {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20)}
    for key in ("best_valid_result", "test_result"):
        assert set(result[key]) == expected
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in result[key].values())
    assert result["test_result"]["hit@20"] > 0
    assert result["config"]["prompt_tuning"] is True and result["config"]["hidden_size"] == 32
    assert result["config"]["eval_args"]["split"] == {"LS": "valid_and_test"}


@pytest.mark.parametrize(
    "model, size",
    [("SASRec", ["--hidden_size=32", "--inner_size=64"]), ("GRU4Rec", ["--embedding_size=32", "--hidden_size=32"]),
     ("Pop", [])],
)
def test_baselines_run_through_the_same_data_split_and_evaluator(beauty_slice, tmp_path, model, size):
    result_file = tmp_path / "result.json"
    run_cli(
        "run_recgpt.py", f"--model={model}", "--dataset=beauty-slice", f"--data_path={beauty_slice}",
        f"--config_files={beauty_slice / 'slice.yaml'}", "--epochs=1", f"--result_file={result_file}",
        "--eval_batch_size=256", *size, cwd=tmp_path,
    )
    result = json.loads(result_file.read_text())
    assert result["model"] == model
    assert result["phases"]["train"]["epochs"] == 1
    assert set(result["test_result"]) == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20)}
    assert result["config"]["MAX_ITEM_LIST_LENGTH"] == 50


def test_hyper_tuning_tries_every_combination(tiny_data_path, tmp_path):
    from recbole_recgpt.cli import hyper_main

    space = tmp_path / "space.hyper"
    space.write_text("prompt_length choice [1,2]\n")
    args = ["--dataset=tiny", f"--data_path={tiny_data_path}", f"--params_file={space}",
            f"--output_file={tmp_path / 'out.txt'}", f"--checkpoint_dir={tmp_path}"]
    summary = hyper_main(args + [f"--{k}={v}" for k, v in TINY_CONFIG.items() if k != "prompt_length"])
    assert sorted(row["params"]["prompt_length"] for row in summary.rows) == [1, 2]
    assert (tmp_path / "out.txt").read_text().count("Test result:") == 2
