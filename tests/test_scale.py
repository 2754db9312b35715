"""The catalogue-scale benchmark: real synthetic catalogues, and a report for every
(catalogue, loss, phase), measured, estimated or out of memory."""

import json
import time

import pandas as pd
import pytest
import torch

from benchmarks import scale
from benchmarks.norm_order import norm_spread


def test_every_item_of_the_catalogue_occurs_and_popularity_falls_with_rank(tmp_path):
    path = scale.write_catalogue(tmp_path, "c", n_items=500, n_users=100, length=30, exponent=1.0)
    inter = pd.read_csv(path, sep="\t")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert len(inter) == 3000 and inter["user_id:token"].nunique() == 100
    counts = inter["item_id:token"].value_counts()
    assert set(counts.index) == set(range(1, 501))  # each item at least once
    # Item 1 is drawn ~1/H(500) ~ 15% of the 2,500 free places; item 500 about 0.03%.
    assert counts[1] > 250 and counts[500] < 10
    assert (inter.groupby("user_id:token")["timestamp:float"].apply(lambda t: list(t) == list(range(30)))).all()


def test_a_catalogue_needs_as_many_interactions_as_items(tmp_path):
    with pytest.raises(ValueError, match="fewer than 1000 items"):
        scale.write_catalogue(tmp_path, "c", n_items=1000, n_users=10, length=50)


def test_a_phase_past_its_budget_is_stopped_with_an_estimate():
    clock = scale.Budget(seconds=0.05)
    clock.batches = 10
    step = clock.counted(lambda: time.sleep(0.03))
    step()
    with pytest.raises(scale.OverBudget):
        step()
    assert clock.done == 2
    assert 10 * 0.03 <= clock.estimate() < 10 * 0.1  # ten batches of ~30 ms


def test_a_phase_that_must_finish_is_never_stopped():
    clock = scale.Budget(seconds=None)
    clock.batches = 3
    step = clock.counted(lambda: time.sleep(0.01))
    for _ in range(3):
        step()
    assert clock.done == 3


def test_the_report_names_every_catalogue_loss_and_phase(tmp_path):
    out = tmp_path / "scale.json"
    args = [f"--out={out}", "--sizes=400", "--losses=sampled_softmax,ce", "--users=60", "--length=12",
            f"--data_path={tmp_path / 'data'}"]
    scale.main(args)
    report = json.loads(out.read_text())
    assert report["settings"]["users"] == 60 and report["git"]
    runs = {(run["items"], run["loss"], run["phase"]): run for run in report["runs"]}
    assert set(runs) == {(400, loss, phase) for loss in ("ce", "sampled_softmax") for phase in scale.PHASES}
    for run in runs.values():
        assert run["status"] == "ok" and run["seconds"] > 0 and run["peak_mb"] > 100 and run["command"] and run["git"]
    assert len({run["run_started"] for run in runs.values()}) == 1  # one invocation measured them all
    for loss in ("ce", "sampled_softmax"):
        finetune = runs[(400, loss, "finetune")]
        assert 0 < finetune["prompt_writing_seconds"] < finetune["seconds"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    scale.main(args)  # kept, not measured again
    assert json.loads(out.read_text())["runs"] == report["runs"]

    # Code that changed a phase: its results from another revision are measured again, the rest kept.
    for run in report["runs"]:
        run["git"] = "0000000"
    out.write_text(json.dumps(report))
    scale.main(args + ["--remeasure=eval"])
    again = json.loads(out.read_text())["runs"]
    assert sorted((run["loss"], run["phase"]) for run in again) == sorted((run["loss"], run["phase"]) for run in report["runs"])
    assert {run["phase"] for run in again if run["git"] != "0000000"} == {"eval"}
    # Only the losses (and catalogues) asked for are measured again: ce's rows stay as they were.
    for run in again:
        run["git"] = "1111111"
    out.write_text(json.dumps({**report, "runs": again}))
    scale.main([arg for arg in args if not arg.startswith("--losses")] + ["--losses=sampled_softmax", "--remeasure=eval"])
    third = json.loads(out.read_text())["runs"]
    assert len(third) == len(again)
    assert {(run["loss"], run["phase"]) for run in third if run["git"] != "1111111"} == {("sampled_softmax", "eval")}
    with pytest.raises(SystemExit, match="--remeasure=evaluation names no phase of pretrain, finetune, eval"):
        scale.main(args + ["--remeasure=evaluation"])


def test_recgpts_evaluation_time_is_split_by_part(tiny_config):
    """The first validation of a phase writes prompts; a repeated one finds them remembered.
    Both run stage-1 passes, stage-2 continuations and catalogue top-k; the parts add up."""
    from benchmarks.speed import evaluation_breakdown
    from recbole_recgpt.quick_start import build

    _, (_, valid_data, _), model, trainer = build(tiny_config())
    model.start_prompt_tuning()

    def evaluate():
        trainer.evaluate(valid_data, load_best_model=False)

    first, repeated = evaluation_breakdown(evaluate), evaluation_breakdown(evaluate)
    parts = ("prompt writing", "stage-1 passes", "stage-2 continuations", "catalogue top-k")
    for times in (first, repeated):
        assert all(times[part] > 0 for part in parts[1:])
        assert sum(times[part] for part in (*parts, "rest")) == pytest.approx(times["total"], abs=0.01)
    assert first["prompt writing"] > 0
    # Remembered prompts are looked up, not written: no transformer pass or top-k inside.
    assert repeated["prompt writing"] < first["prompt writing"]


def test_an_evaluation_whose_training_prompts_cannot_be_written_in_budget_is_skipped_at_once(tmp_path, capsys):
    """Under a budget too short for anything, prompt-tuning stops while writing; the evaluation
    that needs the rest of those prompts is skipped without spending its budget on them."""
    scale.write_catalogue(tmp_path, "scale-400", 400, 600, 12)
    scale.measure_size(tmp_path, "scale-400", ["ce"], scale.PHASES, budget=0.001)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(row["phase"], row["status"]) for row in rows] == [
        ("pretrain", "skipped"), ("finetune", "skipped"), ("eval", "skipped"),
    ]
    assert "of writing left after finetune's" in rows[2]["reason"] and rows[2]["peak_mb"] is None


def test_prompt_tuning_timed_alone_is_written_by_a_pre_trained_network(tmp_path, capsys, monkeypatch):
    """Without pre-training among the phases, an untimed epoch of it comes first."""
    from recbole_recgpt.trainer.phased import PhasedTrainer

    epochs, train_epoch = [], PhasedTrainer._train_epoch
    monkeypatch.setattr(PhasedTrainer, "_train_epoch", lambda self, *a, **k: epochs.append(self.phase_name) or train_epoch(self, *a, **k))
    scale.write_catalogue(tmp_path, "scale-400", 400, 600, 12)
    scale.measure_size(tmp_path, "scale-400", ["sampled_softmax"], ["finetune"], budget=600)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(row["phase"], row["status"]) for row in rows] == [("finetune", "ok")]
    assert epochs == ["pretrain", "finetune"]


def test_rows_after_a_pre_training_short_of_memory_say_their_writer_is_untrained(tmp_path, capsys, monkeypatch):
    from recbole_recgpt.trainer.phased import PhasedTrainer

    train_epoch = PhasedTrainer._train_epoch

    def short_of_memory_in_pre_training(self, *args, **kwargs):
        if self.phase_name == "pretrain":
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8272008272 bytes")
        return train_epoch(self, *args, **kwargs)

    monkeypatch.setattr(PhasedTrainer, "_train_epoch", short_of_memory_in_pre_training)
    scale.write_catalogue(tmp_path, "scale-400", 400, 600, 12)
    for phases in (scale.PHASES, ["finetune", "eval"]):  # timed, or the untimed epoch before them
        scale.measure_size(tmp_path, "scale-400", ["sampled_softmax"], phases, budget=600)
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert [(row["phase"], row["status"], row.get("writer")) for row in rows] == [
            ("pretrain", "out_of_memory", None), ("finetune", "ok", "initialisation"), ("eval", "ok", "initialisation"),
        ][3 - len(phases):]


def test_the_speed_table_is_generated_from_the_report_with_its_ratios_and_targets(tmp_path):
    from benchmarks import speed

    report = {"dataset": "beauty", "pairs_per_epoch": {"sasrec_rows": 1234567},
              "measurements": {"sasrec_train_epoch": {"seconds": 200.0, "peak_mb": 3000.4},
                               "sasrec_whole_sequence_epoch": {"seconds": 10.0, "peak_mb": 900},
                               "recgpt_prompt_tuning_epoch": {"seconds": 25.0, "peak_mb": 1800},
                               "sasrec_full_sort_eval": {"seconds": 2.0, "peak_mb": 250},
                               "recgpt_two_stage_eval": {"seconds": 3.0, "peak_mb": 400}}}
    assert speed.speed_table(report) == [
        "| measurement (beauty) | seconds | ratio | target | peak MB |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| SASRec training epoch, RecBole's trainer (1,234,567 padded prefix rows) | 200.0 | 1 |  | 3,000 |",
        "| SASRec training epoch, whole-sequence trainer (same pairs, full-softmax CE) | 10.0 | 0.050 x |  | 900 |",
        "| RecGPT prompt-tuning epoch (K = 1: 2 x the positions; full-softmax CE) | 25.0 | 2.50 x the whole-sequence "
        "SASRec epoch | <= 1 x | 1,800 |",
        "| SASRec full-sort evaluation of every validation user | 2.00 | 1 |  | 250 |",
        "| RecGPT evaluation, a phase's first (training prompts written): prompts, then two-stage recall, same users "
        "| 3.00 | 1.50 x | <= 1.5 x | 400 |",
    ]
    document = tmp_path / "performance.md"
    document.write_text(f"intro\n{speed.TABLE_START}\nold table\n{speed.TABLE_END}\nafter\n")
    speed.write_table(document, report)
    text = document.read_text()
    assert text.startswith(f"intro\n{speed.TABLE_START}\n| measurement (beauty)") and text.endswith(f"| 400 |\n{speed.TABLE_END}\nafter\n")
    document.write_text("no markers\n")
    with pytest.raises(SystemExit, match="has no '<!-- speed table"):
        speed.write_table(document, report)


def test_the_scale_table_is_generated_from_the_report_with_a_cell_for_every_phase(tmp_path):
    """Every catalogue and loss gets a row and every phase a cell, measured or not; the
    document's table is rewritten between its markers and the rest is kept."""
    run = {"loss": "sampled_softmax", "git": "0123456789abcdef"}
    report = {"runs": [
        {**run, "items": 10**6, "phase": "pretrain", "status": "ok", "seconds": 21.04, "peak_mb": 3100},
        {**run, "items": 10**6, "phase": "finetune", "status": "ok", "seconds": 900.0,
         "prompt_writing_seconds": 850.25, "peak_mb": 3300},
        {"items": 10**6, "loss": "ce", "phase": "pretrain", "status": "skipped", "seconds": None,
         "estimated_seconds": 7000.4, "peak_mb": 9000, "git": "fedcba9876543210"},
        {"items": 10**6, "loss": "ce", "phase": "finetune", "status": "out_of_memory", "seconds": None, "peak_mb": None},
        {"items": 10**6, "loss": "ce", "phase": "eval", "status": "skipped", "seconds": None, "peak_mb": None,
         "reason": "its training prompts were not written within the budget", "writer": "initialisation"},
    ]}
    assert scale.scale_table(report)[2:] == [
        "| 10^6 | ce | skipped (~7000 s), 9000 MB | out of memory | skipped: its training prompts were not written "
        "within the budget, untrained writer | fedcba9 |",
        "| 10^6 | sampled softmax | 21.0 s, 3100 MB | 900.0 s (850.2 s), 3300 MB | not measured | 0123456 |",
        "| 10^6 | gbce | not measured | not measured | not measured |  |",
    ]
    document = tmp_path / "performance.md"
    document.write_text(f"intro\n{scale.TABLE_START}\nold table\n{scale.TABLE_END}\nafter\n")
    out = tmp_path / "scale.json"
    out.write_text(json.dumps(report))
    scale.main([f"--out={out}", f"--table={document}"])
    text = document.read_text()
    assert text.startswith(f"intro\n{scale.TABLE_START}\n| items | loss |")
    assert text.endswith(f"| 10^6 | gbce | not measured | not measured | not measured |  |\n{scale.TABLE_END}\nafter\n")
    assert "old table" not in text and text.count("| 10^6 |") == 3


def test_the_norm_spread_names_the_quantiles_and_the_share_above_half_the_largest_norm():
    # Items of norms 1, 2, ..., 10: median 5.5, largest 10, and 6, 7, 8, 9, 10 lie above 5.
    table = torch.arange(1.0, 11.0).unsqueeze(1) * torch.tensor([[0.6, 0.8]])
    line = norm_spread("tiny", table)
    assert "median 5.500" in line and "largest 10.000" in line
    assert "items above half the largest: 50.0%" in line
