"""``recbole-recgpt compare``: several models and seeds on one dataset, resumable, one table."""

import csv
import os
import shutil
import statistics
import subprocess
import sys

import pytest

import recbole_recgpt.comparison.store as comparison_store
from recbole_recgpt.cli import main
from recbole_recgpt.comparison import compare
from recbole_recgpt.comparison.store import record_path
from recbole_recgpt.comparison.table import Comparison
from recbole_recgpt.record import RunRecord
from recbole_recgpt.trainer import RecGPTTrainer
from tests.conftest import TINY_CONFIG, tiny_sequences, write_inter

MODELS = ("Pop", "SASRec", "RecGPT")
SEEDS = (1, 2)
# The tiny run's sizes and nothing about the data's columns: the dataset has no yaml.
SIZES = {key: value for key, value in TINY_CONFIG.items()
         if key not in ("load_col", "USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD")}
SIZES["finetune_epochs"] = 1
TABLE_COLUMNS = [
    "model", "trainer", "seeds", "chosen_on_validation",
    *(f"{split}_{metric}{std}" for split in ("valid", "test")
      for metric in ("hit@5", "hit@10", "ndcg@5", "ndcg@10") for std in ("", "_std")),
    "epochs", "wall_s",
]


def arguments(data_path, out, dataset="mine", models=MODELS, seeds=SEEDS, **changes):
    settings = {**SIZES, **changes}
    return ["compare", f"--dataset={dataset}", f"--data_path={data_path}", f"--models={','.join(models)}",
            f"--seeds={','.join(map(str, seeds))}", f"--out={out}", *(f"--{k}={v}" for k, v in settings.items())]


def trained_by(patcher, argv):
    """Run the command; return the (model, seed) pairs it trained, in order."""
    trained = []
    run_recgpt = comparison_store.run_recgpt

    def counting(model, dataset, config_files, settings, **kwargs):
        record = run_recgpt(model, dataset, config_files, settings, **kwargs)
        trained.append((record.model, record.seed))
        return record

    patcher.setattr(comparison_store, "run_recgpt", counting)
    try:
        main(argv)
    finally:
        patcher.undo()
    return trained


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    """A folder holding mine/mine.inter and nothing else (no yaml)."""
    folder = tmp_path_factory.mktemp("data")
    write_inter(folder, "mine", tiny_sequences())
    return folder


@pytest.fixture(scope="module")
def compared(data_path, tmp_path_factory):
    """``(out, trained)`` of one comparison of Pop, SASRec and RecGPT over seeds 1 and 2."""
    out = tmp_path_factory.mktemp("comparison")
    return out, trained_by(pytest.MonkeyPatch(), arguments(data_path, out))


def stored(out, model, seed):
    return RunRecord.read(record_path(out / "runs", "mine", model, seed))


def test_every_model_and_seed_is_trained_once_and_recorded(compared):
    out, trained = compared
    assert trained == [(model, seed) for seed in SEEDS for model in MODELS]
    for model in MODELS:
        for seed in SEEDS:
            record = stored(out, model, seed)
            assert (record.model, record.variant, record.seed, record.config["seed"]) == (model, model, seed, seed)
            assert record.command.startswith(f"recbole-recgpt --model={model} --dataset=mine")
            # The yaml-less dataset: its time column was found in the header.
            assert record.config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
            assert list((out / "saved" / "mine" / model / f"seed{seed}").glob(f"{model}-mine-*.pth"))
    # A RecGPT parameter goes to RecGPT only: SASRec has no prompt-tuning phase.
    assert stored(out, "RecGPT", 1).epochs == "2+1" and stored(out, "SASRec", 1).epochs == "2"
    assert "finetune_epochs" not in stored(out, "SASRec", 1).command
    assert stored(out, "SASRec", 1).trainer == "whole-sequence"  # baseline_trainer auto, as a run gets it


def test_the_table_has_one_row_per_model_with_mean_and_std_over_seeds_and_the_choice_on_validation(compared):
    out, _ = compared
    with open(out / "comparison.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == TABLE_COLUMNS
    assert [row["model"] for row in rows] == list(MODELS)
    valid = {}
    for row in rows:
        records = [stored(out, row["model"], seed) for seed in SEEDS]
        tests = [record.test_result["ndcg@10"] for record in records]
        valid[row["model"]] = statistics.fmean(record.best_valid_result["ndcg@10"] for record in records)
        assert row["seeds"] == "2"
        assert float(row["test_ndcg@10"]) == pytest.approx(statistics.fmean(tests), abs=1e-6)
        assert float(row["test_ndcg@10_std"]) == pytest.approx(statistics.stdev(tests), abs=1e-6)
    chosen = max(valid, key=valid.get)
    assert [row["model"] for row in rows if row["chosen_on_validation"] == "True"] == [chosen]
    table = (out / "comparison.md").read_text()
    assert f"| {chosen} ✓ |" in table
    assert sum(line.startswith(f"| {model} ") for line in table.splitlines() for model in MODELS) == len(MODELS)
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_trains_nothing_and_keeps_every_record(compared, data_path, capsys):
    out, _ = compared
    before = {(m, s): stored(out, m, s) for m in MODELS for s in SEEDS}
    main(arguments(data_path, out) + ["--check"])
    assert capsys.readouterr().out.count(": kept (") == len(before)
    assert trained_by(pytest.MonkeyPatch(), arguments(data_path, out)) == []
    assert {key: stored(out, *key) for key in before} == before


def test_a_record_whose_settings_differ_is_trained_again(compared, data_path, tmp_path, capsys):
    out = tmp_path / "comparison"
    shutil.copytree(compared[0], out)
    # loss_type is SASRec's alone (Pop and RecGPT have no such parameter): its runs differ now.
    main(arguments(data_path, out, loss_type="BPR") + ["--check"])
    states = capsys.readouterr().out
    assert states.count(": kept (") == 4 and "mine SASRec seed 1: trains" in states
    assert trained_by(pytest.MonkeyPatch(), arguments(data_path, out, loss_type="BPR")) == [("SASRec", 1), ("SASRec", 2)]
    assert stored(out, "SASRec", 2).config["loss_type"] == "BPR"
    assert stored(out, "Pop", 2) == stored(compared[0], "Pop", 2)


def test_a_killed_run_resumes_to_the_numbers_of_an_uninterrupted_one(data_path, tmp_path, monkeypatch):
    train_epoch = RecGPTTrainer._train_epoch

    def killed_in_epoch_1(self, train_data, epoch_idx, *args, **kwargs):
        if self.phase_name == "pretrain" and epoch_idx == 1:
            raise KeyboardInterrupt
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    settings = {**SIZES, "data_path": str(data_path)}
    monkeypatch.setattr(RecGPTTrainer, "_train_epoch", killed_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        compare("mine", ["RecGPT"], [3], tmp_path / "killed", overrides=settings, log=lambda line: None)
    assert list((tmp_path / "killed" / "saved").rglob("*-resume.pth"))
    monkeypatch.setattr(RecGPTTrainer, "_train_epoch", train_epoch)
    compare("mine", ["RecGPT"], [3], tmp_path / "killed", overrides=settings, log=lambda line: None)
    compare("mine", ["RecGPT"], [3], tmp_path / "whole", overrides=settings, log=lambda line: None)
    resumed, whole = stored(tmp_path / "killed", "RecGPT", 3), stored(tmp_path / "whole", "RecGPT", 3)
    assert resumed.resumed and len(resumed.attempts) == 2 and not whole.resumed
    for key in ("best_valid_result", "test_result", "test_hit_ranks"):
        assert getattr(resumed, key) == getattr(whole, key)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"models": ()}, "error: no model to compare; name them as --models="),
        ({"models": ("SASRec", "SASRek")}, "error: unknown model 'SASRek'"),
        ({"models": ("SASRec", "SASRec")}, "error: model SASRec is named twice"),
        ({"seeds": ("2020", "x")}, "error: --seeds='2020,x': seeds are integers separated by commas"),
        ({"dataset": "nothing"}, "error: dataset 'nothing' not found"),
        ({"promt_length": 2}, "error: unknown parameter 'promt_length' in the command line; did you mean 'prompt_length'?"),
    ],
)
def test_bad_input_gets_one_line_and_trains_nothing(data_path, tmp_path, capsys, changes, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments(data_path, tmp_path / "out", **changes))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(expected), err
    assert not (tmp_path / "out").exists()


def fake_record(model, seed, valid, test):
    results = {"hit@10": test, "ndcg@10": test}
    return RunRecord(dataset="mine", model=model, variant=model, seed=seed, trainer="t", wall_s=1.0,
                     best_valid_result={"hit@10": valid, "ndcg@10": valid}, test_result=results,
                     phases={"train": {"epochs": 3}}, config={"valid_metric": "NDCG@10", "valid_metric_bigger": True})


def test_the_model_chosen_is_the_best_on_validation_whatever_the_test_says():
    comparison = Comparison([fake_record("A", 1, 0.30, 0.10), fake_record("B", 1, 0.20, 0.40),
                             fake_record("A", 2, 0.10, 0.20), fake_record("B", 2, 0.25, 0.40)])
    assert comparison.chosen == "B"  # validation means: A 0.20, B 0.225
    a, b = comparison.rows()
    assert (a["valid_ndcg@10"], a["valid_ndcg@10_std"]) == (0.2, round(statistics.stdev([0.3, 0.1]), 6))
    assert (b["test_ndcg@10"], b["test_ndcg@10_std"], b["chosen_on_validation"]) == (0.4, 0.0, True)
    assert "| B ✓ | t | 2 | **0.2250 ± 0.0354** | **0.4000 ± 0.0000** | **0.4000 ± 0.0000** | 3, 3 | 1 |" in comparison.markdown()


def test_the_console_entry_compares_from_an_empty_folder_on_a_dataset_without_yaml(data_path, tmp_path):
    empty = tmp_path / "anywhere"
    empty.mkdir()
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment.pop("PYTHONPATH", None)
    argv = arguments(data_path, "out", models=("SASRec", "RecGPT"), seeds=(7,), epochs=1)
    done = subprocess.run([sys.executable, "-m", "recbole_recgpt.cli", *argv], cwd=empty, env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {path.name for path in (empty / "out").iterdir()} == {"runs", "saved", "comparison.csv", "comparison.md",
                                                                  "comparison.png"}
    with open(empty / "out" / "comparison.csv") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["SASRec", "RecGPT"]
    assert "Made by `" in (empty / "out" / "comparison.md").read_text()
    assert "-m recbole_recgpt.cli compare --dataset=mine" in (empty / "out" / "comparison.md").read_text()
