"""Comparison campaigns: one record per run, reuse of unchanged runs, derived rows, tables."""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from benchmarks.compare import main as campaign
from benchmarks.curves import curve, main as curves_main
from benchmarks.plan import main as plan_main, planned_runs
from benchmarks.repeats import KINDS, breakdown, main as repeats, target_kinds
from benchmarks.significance import main as significance
from benchmarks.tables import (
    README_END, README_START, dataset_sections, gain_lines, search_tables, summarise, sweep_panels, update_readme,
)
from benchmarks.store import Run, adopt, cpu_seconds, git_revision, load_variants
from recbole_recgpt.comparison.store import claim, record_path
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.quick_start import run_recgpt
from recbole_recgpt.record import RunRecord
from recbole_recgpt.trainer import RecGPTTrainer
from tests.conftest import REPO, TINY_DATA, TINY_RECGPT


@pytest.fixture
def tiny_campaign(tiny_data_path, tmp_path):
    """``run(variants=..., seeds=...)`` runs a campaign on the tiny dataset; returns the store."""
    settings = tmp_path / "tiny.yaml"
    settings.write_text(yaml.safe_dump({**TINY_DATA, "topk": [5, 10, 20]}))
    variants = {
        "Pop": {"model": "Pop", "group": "main", "config_files": [str(settings)]},
        "SASRec": {"model": "SASRec", "group": "main", "config_files": [str(settings)],
                   "overrides": {"baseline_trainer": "whole_sequence"}},
        "RecGPT": {"model": "RecGPT", "group": "main", "headline": "RecGPT", "config_files": [str(settings)],
                   "overrides": TINY_RECGPT},
        "RecGPT-pretrain-only": {"derived_from": "RecGPT", "checkpoint": "pretrain", "group": "main",
                                 "overrides": {"prompt_tuning": False, "two_stage": False}},
        "RecGPT-single-stage": {"derived_from": "RecGPT", "group": "ablation", "overrides": {"two_stage": False}},
        "RecGPT-N5": {"derived_from": "RecGPT", "group": "ablation", "sweep": "stage1_n", "overrides": {"stage1_n": 5}},
        "RecGPT-K0": {"start_from": "RecGPT", "group": "experiment", "overrides": {"prompt_length": 0}},
        "RecGPT-K1": {"start_from": "RecGPT", "group": "experiment", "overrides": {"prompt_length": 1}},
    }
    variants_file = tmp_path / "variants.yaml"

    def arguments(names, seeds="1"):
        return [
            "--datasets=tiny", f"--variants={names}", f"--seeds={seeds}", f"--data_path={tiny_data_path}",
            f"--store={tmp_path / 'runs'}", f"--results={tmp_path}", f"--document={tmp_path / 'results.md'}",
            "--readme=", "--experiments=", f"--variants_file={variants_file}",
            f"--checkpoint_dir={tmp_path / 'saved'}",
        ]

    def run(names, seeds="1", **variant_overrides):
        for name, overrides in variant_overrides.items():
            variants[name].setdefault("overrides", {}).update(overrides)
        variants_file.write_text(yaml.safe_dump(variants))
        assert campaign(arguments(names, seeds)) == 0
        return tmp_path

    run.arguments = arguments
    return run


def record(root, variant, seed=1):
    return RunRecord.read(record_path(root / "runs", "tiny", variant, seed))


def forget_checkpoints(root):
    """As in a fresh checkout: every checkpoint and resume file is gone."""
    for checkpoint in (root / "saved").rglob("*.pth"):
        checkpoint.unlink()


def plan_of(root, data_path, variant, capsys):
    """What ``benchmarks.plan`` prints for a plan of one tiny row."""
    plan = root / "plan.yaml"
    plan.write_text(yaml.safe_dump([{"datasets": ["tiny"], "seeds": [1], "variants": [variant]}]))
    capsys.readouterr()
    assert plan_main([f"--plan={plan}", f"--store={root / 'runs'}", f"--variants_file={root / 'variants.yaml'}",
                      f"--data_path={data_path}"]) == 0
    return capsys.readouterr().out


def test_a_campaign_writes_one_record_per_run_with_what_reproduces_it(tiny_campaign):
    root = tiny_campaign("Pop,SASRec,RecGPT", seeds="1,2")
    for variant in ("Pop", "SASRec", "RecGPT"):
        for seed in (1, 2):
            result = record(root, variant, seed)
            assert result.seed == seed and result.config["seed"] == seed
            assert result.command.startswith(f"python run_recgpt.py --model={result.model} --dataset=tiny")
            assert f"--seed={seed}" in result.command
            assert result.revision == git_revision() and result.wall_s > 0
    assert record(root, "SASRec").trainer == "whole-sequence"
    # Parameter counts: RecGPT's frozen prompt writer is a copy of its network; SASRec has none.
    recgpt, sasrec = record(root, "RecGPT").parameters, record(root, "SASRec").parameters
    assert recgpt["trainable"] > 0 and recgpt["frozen"] > 0 and sasrec["trainable"] > 0 and sasrec["frozen"] == 0
    assert recgpt["frozen"] == recgpt["trainable"]  # the writer is a copy of the whole network
    assert record(root, "RecGPT").epochs == "2+2"
    assert record(root, "RecGPT", 1).test_result != record(root, "RecGPT", 2).test_result

    rows = list(csv.DictReader(open(root / "comparison.csv")))
    assert len(rows) == 6
    assert {"dataset", "model", "seed", "valid_ndcg@10", "hit@10", "ndcg@20", "epochs", "wall_s", "git", "command"} <= set(rows[0])
    table = (root / "comparison.md").read_text()
    assert "## tiny: Main comparison" in table and " ± " in table and "**" in table
    assert "- RecGPT vs the best baseline on validation (SASRec), seeds 1, 2: valid NDCG@10" in table
    assert (root / "comparison.png").stat().st_size > 1000
    # The headline: RecGPT against the baseline best on validation (Pop or SASRec), both seeds.
    def over_seeds(variant, result, metric):
        return sum(getattr(record(root, variant, seed), result)[metric] for seed in (1, 2))

    best = max(("Pop", "SASRec"), key=lambda variant: over_seeds(variant, "best_valid_result", "ndcg@10"))
    gain = over_seeds("RecGPT", "test_result", "ndcg@10") / over_seeds(best, "test_result", "ndcg@10") - 1
    [headline] = [line for line in (root / "results.md").read_text().splitlines() if line.startswith("| tiny |")]
    assert headline.startswith("| tiny | ranked | RecGPT | 2 |") and f"| {best} |" in headline
    # Then the per-seed difference and its 95% interval over the two seeds (t with 1 degree of freedom: 12.706).
    differences = [record(root, "RecGPT", seed).test_result["ndcg@10"] - record(root, best, seed).test_result["ndcg@10"]
                   for seed in (1, 2)]
    mean, half = sum(differences) / 2, 12.7062 * abs(differences[0] - differences[1]) / 2
    assert headline.endswith(f"| {100 * gain:+.1f}% | {mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}] |")
    # Validation curves: RecGPT's two phases one after the other.
    points = curve(record(root, "RecGPT"))
    assert [(x, phase) for x, _, phase in points] == [(1, "pretrain"), (2, "pretrain"), (3, "finetune"), (4, "finetune")]
    curves_main(["--dataset=tiny", "--variants=SASRec,RecGPT", "--seed=1", f"--store={root / 'runs'}", f"--out={root / 'c.png'}"])
    assert (root / "c.png").stat().st_size > 1000


def test_unchanged_runs_are_kept_and_changed_ones_run_again(tiny_campaign, capsys):
    root = tiny_campaign("Pop,SASRec")
    before = {v: record(root, v).finished + record(root, v).settings_hash for v in ("Pop", "SASRec")}
    capsys.readouterr()
    tiny_campaign("Pop,SASRec", SASRec={"learning_rate": 0.002})
    output = capsys.readouterr().out
    assert "tiny Pop seed 1: kept" in output
    assert "tiny SASRec seed 1: kept" not in output
    assert record(root, "Pop").finished + record(root, "Pop").settings_hash == before["Pop"]
    assert record(root, "SASRec").settings_hash not in before["SASRec"]
    assert record(root, "SASRec").config["learning_rate"] == 0.002


def test_the_script_form_rebuilds_the_three_outputs_from_the_store_without_training(tiny_campaign):
    root = tiny_campaign("Pop,SASRec")
    finished = {variant: record(root, variant).finished for variant in ("Pop", "SASRec")}
    outputs = [root / name for name in ("comparison.csv", "comparison.md", "comparison.png")]
    for output in outputs:
        output.unlink()
    script = [sys.executable, "benchmarks/compare.py", *tiny_campaign.arguments("Pop,SASRec")]
    done = subprocess.run(script, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "tiny Pop seed 1: kept" in done.stdout and "tiny SASRec seed 1: kept" in done.stdout
    assert {variant: record(root, variant).finished for variant in finished} == finished
    assert all(output.stat().st_size > 0 for output in outputs)


def test_a_campaign_that_finds_a_run_claimed_leaves_the_claim_in_place(tmp_path):
    path = tmp_path / "seed1.json"
    with claim(path) as first:
        assert first
        with claim(path) as second:
            assert not second
        with claim(path) as third:  # the first claim still holds the run
            assert not third
    with claim(path) as after:
        assert after


def test_a_claim_ends_with_the_process_that_held_it_however_it_ends(tmp_path):
    path = tmp_path / "seed1.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from recbole_recgpt.comparison.store import claim\n"
         f"with claim({str(path)!r}) as mine:\n    print(mine, flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "True"
    with claim(path) as mine:
        assert not mine  # held by the other process
    holder.kill()
    holder.wait()
    with claim(path) as mine:
        assert mine  # SIGKILL left a lock file, but no claim


def test_a_record_made_before_an_option_existed_is_kept(tiny_campaign, capsys):
    root = tiny_campaign("Pop")
    path = record_path(root / "runs", "tiny", "Pop", 1)
    made_before = record(root, "Pop")
    del made_before.config["eval_mask_history"]
    made_before.settings_hash = "from-older-code"
    made_before.write(path)
    capsys.readouterr()
    tiny_campaign("Pop")
    assert "tiny Pop seed 1: kept" in capsys.readouterr().out
    tiny_campaign("Pop", Pop={"eval_mask_history": True})  # the option set otherwise: a new run
    assert record(root, "Pop").config["eval_mask_history"] is True


def test_a_killed_run_resumes_from_its_resume_file_to_the_same_numbers(tiny_campaign, monkeypatch):
    train_epoch = RecGPTTrainer._train_epoch

    untimed_seconds = 2.0

    def killed_in_phase_2(self, train_data, epoch_idx, *args, **kwargs):
        if self.phase_name == "finetune" and epoch_idx == 1:
            raise KeyboardInterrupt
        if self.phase_name == "finetune":
            time.sleep(untimed_seconds)  # outside the epoch's own clock, as waiting for data is
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(RecGPTTrainer, "_train_epoch", killed_in_phase_2)
    monkeypatch.setattr("benchmarks.store.LOADED_REVISION", "first-revision")
    with pytest.raises(KeyboardInterrupt):
        tiny_campaign("RecGPT", seeds="2")
    monkeypatch.setattr(RecGPTTrainer, "_train_epoch", train_epoch)
    monkeypatch.setattr("benchmarks.store.LOADED_REVISION", "second-revision")
    root = tiny_campaign("RecGPT", seeds="2")
    resumed = record(root, "RecGPT", 2)
    assert resumed.resumed is True and resumed.epochs == "2+2"
    # Each attempt ran its own checkout: the record names both.
    assert [attempt["git"] for attempt in resumed.attempts] == ["first-revision", "second-revision"]
    assert resumed.git == "second-revision"
    # Phase 2's wall time holds the killed attempt's epoch too, and the run's holds its phases'.
    finetune = resumed.phases["finetune"]
    assert finetune["wall_seconds"] >= untimed_seconds + finetune["train_seconds"] + finetune["valid_seconds"]
    phase_seconds = sum(phase["wall_seconds"] for phase in resumed.phases.values())
    assert resumed.wall_s >= round(phase_seconds, 1) and resumed.last_attempt_wall_s <= resumed.wall_s
    record_path(root / "runs", "tiny", "RecGPT", 2).unlink()
    shutil.rmtree(root / "saved")
    uninterrupted = record(tiny_campaign("RecGPT", seeds="2"), "RecGPT", 2)
    assert uninterrupted.resumed is False and len(uninterrupted.attempts) == 1
    for key in ("best_valid_result", "test_result", "test_hit_ranks"):
        assert getattr(resumed, key) == getattr(uninterrupted, key)


def test_attempts_are_kept_across_resumes_and_restart_with_a_fresh_run(tmp_path, monkeypatch):
    run = Run(tmp_path / "runs", "tiny", "Pop", {"model": "Pop"}, 1, {"checkpoint_dir": str(tmp_path / "saved")})
    run.checkpoint_dir.mkdir(parents=True)
    monkeypatch.setattr("benchmarks.store.LOADED_REVISION", "abc")
    # A resume file left by code that kept no account of its attempt: that attempt is unknown.
    assert [attempt["git"] for attempt in run._attempts(resume="old-resume.pth")] == [None, "abc"]
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        attempts = run._attempts(resume="old-resume.pth")
    finally:
        torch.set_num_threads(threads)
    assert [attempt["git"] for attempt in attempts] == [None, "abc", "abc"]
    assert [attempt["threads"] for attempt in attempts] == [None, threads, threads + 1]
    assert [attempt["git"] for attempt in run._attempts(resume=None)] == ["abc"]


def test_derived_rows_score_the_parent_checkpoints_without_training(tiny_campaign):
    root = tiny_campaign("RecGPT-pretrain-only,RecGPT-single-stage,RecGPT-N5")
    parent = record(root, "RecGPT")
    pretrain_only = record(root, "RecGPT-pretrain-only")
    # Phase 1 is validated on plain next-item ranking: its best is what the derived row scores.
    best_phase1 = max(score for _, score in parent.phases["pretrain"]["valid_curve"])
    assert pretrain_only.best_valid_result["ndcg@10"] == pytest.approx(best_phase1, abs=1e-4)
    assert pretrain_only.epochs == "2" and pretrain_only.derived_checkpoint == "pretrain"
    assert pretrain_only.config["prompt_tuning"] is False
    # Two-stage recall with N = 5 returns stage 1's top 5 first: @5 is the single-stage @5.
    single, n5 = record(root, "RecGPT-single-stage"), record(root, "RecGPT-N5")
    assert single.epochs == n5.epochs == "2+2"
    for key in ("best_valid_result", "test_result"):
        for metric in ("hit@5", "ndcg@5"):
            assert getattr(n5, key)[metric] == getattr(single, key)[metric]
    assert n5.best_valid_result["ndcg@10"] != single.best_valid_result["ndcg@10"]
    assert (root / "ablations.png").stat().st_size > 1000


def test_a_phase_2_variant_starts_from_the_parent_phase_1_checkpoint(tiny_campaign):
    root = tiny_campaign("RecGPT-K0")
    parent, child = record(root, "RecGPT"), record(root, "RecGPT-K0")
    assert child.config["pretrained_checkpoint"] == parent.phases["pretrain"]["checkpoint"]
    assert child.config["prompt_length"] == 0 and set(child.phases) == {"finetune"}
    assert child.parent_hash == parent.settings_hash and child.epochs == "2"
    assert list(csv.DictReader(open(root / "comparison.csv")))[-1]["parent"].endswith("RecGPT/seed1.json")


def test_a_run_made_outside_the_campaign_is_adopted_only_if_its_settings_match(tiny_campaign, tiny_data_path, capsys):
    root = tiny_campaign("Pop")
    variants = load_variants(root / "variants.yaml")
    shared = {"data_path": str(tiny_data_path), "checkpoint_dir": str(root / "saved")}
    run = Run(root / "runs", "tiny", "SASRec", variants["SASRec"], 1, shared)
    result = run_recgpt("SASRec", "tiny", run.config_files, run.overrides)
    meta = {"git": "abc", "wall_s": 1.5, "threads": 1, "command": "python run_recgpt.py --model=SASRec"}
    with pytest.raises(ValueError, match="learning_rate differ"):
        adopt(run, "SASRec", dataclasses.replace(result, config={**result.config, "learning_rate": 0.5}), meta)
    adopted = adopt(run, "SASRec", result, meta)
    assert adopted.git == "abc" and adopted.adopted and adopted.test_result == result.test_result
    capsys.readouterr()
    tiny_campaign("SASRec")
    assert "tiny SASRec seed 1: kept" in capsys.readouterr().out


def test_a_finished_phase_2_run_is_kept_when_its_parent_checkpoints_are_gone(tiny_campaign, capsys):
    root = tiny_campaign("RecGPT-K0")
    forget_checkpoints(root)
    capsys.readouterr()
    tiny_campaign("RecGPT-K0")
    assert "tiny RecGPT-K0 seed 1: kept" in capsys.readouterr().out


def test_a_parent_whose_checkpoints_are_gone_is_trained_again_for_a_new_child(tiny_campaign, tiny_data_path, capsys):
    root = tiny_campaign("RecGPT-single-stage")
    before, single = record(root, "RecGPT"), record(root, "RecGPT-single-stage")
    # Trained again at the threads its record names, not the campaign's.
    before.threads = torch.get_num_threads() + 1
    before.write(record_path(root / "runs", "tiny", "RecGPT", 1))
    forget_checkpoints(root)
    assert "tiny RecGPT seed 1: its checkpoints are not in this checkout; the campaign trains it again" in plan_of(
        root, tiny_data_path, "RecGPT-N5", capsys)

    tiny_campaign("RecGPT-N5,RecGPT-single-stage")
    output = capsys.readouterr().out
    assert "tiny RecGPT seed 1: trained again, its checkpoints are not in this checkout" in output
    assert "tiny RecGPT seed 1: reproduced" in output
    after = record(root, "RecGPT")
    assert after.checkpoint != before.checkpoint and Path(after.checkpoint).is_file()
    assert after.threads == before.threads and torch.get_num_threads() == before.threads - 1
    assert after.remade["reproduced"] and after.remade["previous"]["test_result"] == before.test_result
    assert after.remade["equivalent_checkpoints"]["final"] == [before.checkpoint]
    # The same run again: the row scored from the earlier checkpoint stays, the new one uses the new file.
    assert "tiny RecGPT-single-stage seed 1: kept" in output and record(root, "RecGPT-single-stage") == single
    assert record(root, "RecGPT-N5").checkpoint == after.checkpoint


def test_a_reproduced_parent_keeps_the_rows_made_under_its_older_settings_hash(tiny_campaign, capsys):
    # As if parent and child were made at a revision whose config lacked a key added since at
    # its default: the same settings under another hash.
    root = tiny_campaign("RecGPT-single-stage")
    parent, child = record(root, "RecGPT"), record(root, "RecGPT-single-stage")
    parent.settings_hash = child.parent_hash = "0123456789abcdef"
    parent.write(record_path(root / "runs", "tiny", "RecGPT", 1))
    child.write(record_path(root / "runs", "tiny", "RecGPT-single-stage", 1))
    forget_checkpoints(root)
    capsys.readouterr()
    tiny_campaign("RecGPT-N5,RecGPT-single-stage")  # RecGPT-N5 needs the parent's checkpoint
    output = capsys.readouterr().out
    assert "tiny RecGPT seed 1: reproduced" in output
    assert record(root, "RecGPT").remade["equivalent_settings_hashes"] == ["0123456789abcdef"]
    assert "tiny RecGPT-single-stage seed 1: kept" in output and record(root, "RecGPT-single-stage") == child


def as_if_it_had_ended_elsewhere(root, *keys):
    """Move one number of the stored RecGPT record (at ``keys``) by 0.5 and lose its
    checkpoints: a parent that the next campaign trains again and cannot reproduce."""
    path = record_path(root / "runs", "tiny", "RecGPT", 1)
    stored = json.loads(path.read_text())
    *outer, last = keys
    holder = stored
    for key in outer:
        holder = holder[key]
    holder[last] += 0.5
    path.write_text(json.dumps(stored))
    forget_checkpoints(root)


def test_a_parent_trained_again_to_other_numbers_makes_its_children_stale(tiny_campaign, capsys):
    root = tiny_campaign("RecGPT-single-stage")
    as_if_it_had_ended_elsewhere(root, "test_result", "ndcg@10")
    capsys.readouterr()
    tiny_campaign("RecGPT-N5")
    assert "tiny RecGPT seed 1: NOT reproduced" in capsys.readouterr().out
    remade = record(root, "RecGPT").remade
    assert not remade["reproduced"] and remade["equivalent_checkpoints"] == {}
    tiny_campaign("RecGPT-single-stage")
    assert "tiny RecGPT-single-stage seed 1: kept" not in capsys.readouterr().out
    assert record(root, "RecGPT-single-stage").checkpoint == record(root, "RecGPT").checkpoint


def test_a_new_phase_2_child_trains_the_parent_again_through_phase_1_only(tiny_campaign, tiny_data_path, capsys):
    root = tiny_campaign("RecGPT-K0,RecGPT-single-stage")
    before, k0, single = record(root, "RecGPT"), record(root, "RecGPT-K0"), record(root, "RecGPT-single-stage")
    forget_checkpoints(root)
    assert "the campaign trains its phases through pretrain again first" in plan_of(
        root, tiny_data_path, "RecGPT-K1", capsys)

    tiny_campaign("RecGPT-K1")
    output = capsys.readouterr().out
    assert "tiny RecGPT seed 1: trained again through its pretrain phase" in output
    assert "tiny RecGPT seed 1: reproduced its pretrain phase" in output
    after = record(root, "RecGPT")
    # The record keeps its numbers and names the new phase-1 checkpoint; phase 2 was not trained.
    assert {k: v for k, v in after.to_dict().items() if k not in ("phases", "remade")} == {
        k: v for k, v in before.to_dict().items() if k not in ("phases", "remade")}
    new_phase_1 = after.phases["pretrain"]["checkpoint"]
    assert new_phase_1 != before.phases["pretrain"]["checkpoint"] and Path(new_phase_1).is_file()
    assert not Path(after.checkpoint).exists()
    assert after.remade["phases"] == ["pretrain"]
    assert after.remade["equivalent_checkpoints"] == {"pretrain": [before.phases["pretrain"]["checkpoint"]]}
    assert record(root, "RecGPT-K1").config["pretrained_checkpoint"] == new_phase_1
    assert record(root, "RecGPT-K0") == k0

    # A derived child then needs the final checkpoint: the run continues from its phase 1.
    tiny_campaign("RecGPT-N5,RecGPT-single-stage,RecGPT-K0,RecGPT-K1")
    output = capsys.readouterr().out
    assert "tiny RecGPT seed 1: reproduced (valid" in output
    final = record(root, "RecGPT")
    assert final.resumed and len(final.attempts) == 2 and final.test_result == before.test_result
    assert final.remade["equivalent_checkpoints"]["pretrain"] == [before.phases["pretrain"]["checkpoint"]]
    assert final.remade["equivalent_checkpoints"]["final"] == [before.checkpoint]
    for child in ("RecGPT-single-stage", "RecGPT-K0", "RecGPT-K1"):
        assert f"tiny {child} seed 1: kept" in output
    assert record(root, "RecGPT-single-stage") == single and record(root, "RecGPT-K0") == k0


def test_a_parent_whose_phase_1_differs_is_trained_to_the_end_and_its_children_go_stale(tiny_campaign, capsys):
    root = tiny_campaign("RecGPT-K0")
    as_if_it_had_ended_elsewhere(root, "phases", "pretrain", "valid_curve", 0, 1)
    capsys.readouterr()
    tiny_campaign("RecGPT-K1")
    output = capsys.readouterr().out
    assert "tiny RecGPT seed 1: NOT reproduced" in output
    after = record(root, "RecGPT")
    assert Path(after.checkpoint).is_file() and after.remade["equivalent_checkpoints"] == {}
    assert len(after.attempts) == 2  # phase 2 continued the phase 1 just trained
    tiny_campaign("RecGPT-K0")
    assert "tiny RecGPT-K0 seed 1: kept" not in capsys.readouterr().out


def test_cpu_time_counts_runs_trained_again_and_the_runs_they_replaced():
    def run(remade=None):
        return RunRecord(dataset="tiny", model="Pop", wall_s=10, threads=2, remade=remade)

    assert cpu_seconds(run()) == 20
    assert cpu_seconds(run({"wall_s": 3, "threads": 1, "previous": {"git": "a"}})) == 23  # phase 1 again
    assert cpu_seconds(run({"previous": {"wall_s": 5, "threads": 1}})) == 25


def test_paired_significance_pairs_the_same_users_from_stored_hit_ranks_or_rescored_checkpoints(
        tiny_campaign, tiny_data_path, capsys):
    root = tiny_campaign("SASRec,RecGPT-single-stage", seeds="1,2")
    common = [f"--data_path={tiny_data_path}", f"--store={root / 'runs'}", f"--variants_file={root / 'variants.yaml'}",
              "--dataset=tiny", "--seeds=1,2"]
    paths = [record_path(root / "runs", "tiny", variant, seed) for variant in ("SASRec", "RecGPT-single-stage")
             for seed in (1, 2)]
    with_ranks = {path: RunRecord.read(path) for path in paths}
    assert all(stored.test_hit_ranks for stored in with_ranks.values())
    for path, stored in with_ranks.items():  # as records made before they kept hit ranks
        dataclasses.replace(stored, test_hit_ranks=None).write(path)
    # Each rescored per-user mean is checked against the stored test result, or it fails.
    significance(common + ["--variants=RecGPT-single-stage,SASRec", f"--out={root / 'sig.md'}"])
    table = (root / "sig.md").read_text()
    assert "| mean of seeds | ndcg@10 |" in table and table.count("| 1 | ") == 2
    assert "Made by `python -m benchmarks.significance --data_path=" in table
    # From the records' hit ranks, with no checkpoint left: the same table.
    for path, stored in with_ranks.items():
        stored.write(path)
    forget_checkpoints(root)
    significance(common + ["--variants=RecGPT-single-stage,SASRec", f"--out={root / 'sig.md'}"])
    assert (root / "sig.md").read_text() == table
    capsys.readouterr()
    significance(common + ["--variants=SASRec,SASRec"])
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("| 1 |") or line.startswith("| mean of seeds |"):
            assert "| +0.0000 | [+0.0000, +0.0000] |" in line
    with pytest.raises(SystemExit, match="no record of RecGPT on tiny, seed 3"):
        significance(common[:-1] + ["--seeds=3", "--variants=RecGPT,SASRec"])


def test_targets_are_told_apart_as_the_last_item_again_an_earlier_item_again_or_new():
    config = {"ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list", "ITEM_LIST_LENGTH_FIELD": "item_length",
              "USER_ID_FIELD": "user_id"}
    features = {
        "user_id": torch.tensor([7, 3, 5, 9]),
        "item_id_list": torch.tensor([[4, 6, 0], [4, 6, 8], [2, 0, 0], [6, 0, 0]]),
        "item_length": torch.tensor([2, 3, 1, 1]),
        "item_id": torch.tensor([6, 4, 9, 6]),
    }
    loader = SimpleNamespace(dataset=SimpleNamespace(config=config, inter_feat=features))
    users, kinds = target_kinds(loader)
    assert users.tolist() == [7, 3, 5, 9] and [KINDS[k] for k in kinds] == [
        "last item again", "earlier item again", "new item", "last item again"]
    # Per-user metrics in user order (3, 5, 7, 9): each kind's share is its sum over all users.
    rows = breakdown(np.array([3, 5, 7, 9]), {"ndcg@10": np.array([0.5, 0.0, 1.0, 0.25]),
                                             "hit@10": np.array([1.0, 0.0, 1.0, 1.0])}, loader)
    assert rows["last item again"] == (2, 0.3125, 0.5, 1.0)
    assert rows["earlier item again"] == (1, 0.125, 0.25, 1.0)
    assert rows["new item"] == (1, 0.0, 0.0, 0.0)


def test_the_repeat_breakdown_adds_up_to_the_stored_metrics(tiny_campaign, tiny_data_path, capsys):
    root = tiny_campaign("SASRec")
    capsys.readouterr()
    repeats([f"--data_path={tiny_data_path}", f"--store={root / 'runs'}", f"--variants_file={root / 'variants.yaml'}",
             "--dataset=tiny", "--seeds=1", "--variants=SASRec"])
    stored = record(root, "SASRec")
    lines = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| SASRec |")]
    totals = {row[1]: row for row in lines if row[2] == "all"}
    assert float(totals["test"][4]) == pytest.approx(stored.test_result["ndcg@10"], abs=1e-4)
    assert float(totals["valid"][5]) == pytest.approx(stored.best_valid_result["hit@10"], abs=1e-4)
    assert len(lines) == 8  # three kinds and the total, for each split


def test_the_plan_lists_missing_and_stale_rows_and_the_commands_that_fill_them(tiny_campaign, tiny_data_path, capsys):
    root = tiny_campaign("Pop,SASRec")
    plan = root / "plan.yaml"
    plan.write_text(yaml.safe_dump([{"datasets": ["tiny"], "seeds": [1, 2], "variants": ["Pop", "SASRec", "RecGPT-pretrain-only"]}]))
    arguments = [f"--plan={plan}", f"--store={root / 'runs'}", f"--variants_file={root / 'variants.yaml'}",
                 f"--data_path={tiny_data_path}"]

    def report():
        capsys.readouterr()
        assert plan_main(arguments) == 0
        return capsys.readouterr().out

    output = report()
    assert "tiny: 2 of 6 planned rows done" in output
    # A derived row waits for its parent: missing while the parent has no record.
    assert "missing: Pop seed 2, SASRec seed 2, RecGPT-pretrain-only seed 1, RecGPT-pretrain-only seed 2" in output
    assert ("python -m benchmarks.compare --datasets=tiny --seeds=2 --variants=Pop,SASRec "
            f"--data_path={tiny_data_path}") in output
    assert "--seeds=1,2 --variants=RecGPT-pretrain-only" in output
    wall = sum(record(root, variant).wall_s for variant in ("Pop", "SASRec"))
    assert f"CPU time of the 2 runs in {root / 'runs'}: {wall / 3600:.1f} core-hours" in output

    variants = yaml.safe_load((root / "variants.yaml").read_text())
    variants["SASRec"]["overrides"]["learning_rate"] = 0.002
    (root / "variants.yaml").write_text(yaml.safe_dump(variants))
    output = report()
    assert "tiny: 1 of 6 planned rows done" in output and "stale: SASRec seed 1" in output
    assert "--seeds=1,2 --variants=SASRec,RecGPT-pretrain-only" in output

    with pytest.raises(ConfigError, match="variant 'BERT', which the variants file lacks; add or rename it"):
        planned_runs([{"datasets": ["tiny"], "seeds": [1], "variants": ["BERT"]}], variants)


def test_a_row_whose_config_file_a_search_has_not_written_yet_is_waiting(tiny_campaign, tiny_data_path, capsys):
    root = tiny_campaign("Pop")
    variants = yaml.safe_load((root / "variants.yaml").read_text())
    best = root / "sasrec-best.yaml"
    variants["SASRec-tuned"] = {**variants["SASRec"], "config_files": [str(best)], "search": "sasrec.csv"}
    (root / "variants.yaml").write_text(yaml.safe_dump(variants))

    output = plan_of(root, tiny_data_path, "SASRec-tuned", capsys)
    assert (f"tiny: 0 of 1 planned rows done\n  waiting: SASRec-tuned seed 1 (its config file {best} does not exist "
            "yet; its search writes it: sasrec.csv)") in output
    assert "The waiting rows can run once their config files exist." in output and "benchmarks.compare" not in output

    best.write_text("learning_rate: 0.002\n")
    output = plan_of(root, tiny_data_path, "SASRec-tuned", capsys)
    assert "missing: SASRec-tuned seed 1" in output and "--variants=SASRec-tuned" in output


def fake_record(variant, seed, ndcg, **fields):
    metrics = {m: ndcg for m in ("hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20")}
    return RunRecord(dataset="tiny", model="any", variant=variant, seed=seed, best_valid_result={"ndcg@10": ndcg},
                     test_result=metrics, wall_s=1.0, trainer="t", **{"phases": {"train": {"epochs": 1}}, **fields})


def test_the_gain_over_the_best_baseline_uses_the_seeds_both_rows_have():
    variants = {"SASRec": {"model": "SASRec"}, "GRU4Rec": {"model": "GRU4Rec"}, "RecGPT": {"model": "RecGPT"}}
    summaries = {
        "SASRec": summarise([fake_record("SASRec", 1, 0.10)]),
        "GRU4Rec": summarise([fake_record("GRU4Rec", 1, 0.05), fake_record("GRU4Rec", 2, 0.05)]),
        "RecGPT": summarise([fake_record("RecGPT", 1, 0.11), fake_record("RecGPT", 2, 0.50)]),
    }
    (line,) = gain_lines(summaries, variants)
    assert line == ("- RecGPT vs the best baseline on validation (SASRec), seed 1: "
                    "valid NDCG@10 +10.0%, test NDCG@10 +10.0%, test HR@10 +10.0%.")


def test_an_ablation_is_compared_with_its_reference_run_of_the_same_seed():
    variants = {"RecGPT": {"model": "RecGPT", "group": "main"},
                "RecGPT-N5": {"derived_from": "RecGPT", "parent": "RecGPT", "group": "ablation", "sweep": "stage1_n"}}
    records = [fake_record(name, seed, ndcg, config={"stage1_n": n})
               for name, seed, ndcg, n in (("RecGPT", 1, 0.10, 9), ("RecGPT", 2, 0.30, 9), ("RecGPT-N5", 1, 0.12, 5))]
    main, ablations = "\n".join(dataset_sections(records, variants, ("main", "ablation"), 4)).split("Paper ablations")
    assert "| RecGPT | t | 2 | **0.2000 ± 0.1414** |" in main
    assert "| RecGPT |  | 1 | 0.1000 |" in ablations
    ((title, points),) = sweep_panels(records, variants)
    assert title == "tiny: stage1_n (RecGPT), seed 1"
    assert [(n, [r["ndcg@10"] for r in results]) for n, results in points] == [(5, [0.12]), (9, [0.10])]


def test_a_sampled_loss_may_replace_full_ce_only_when_level_on_validation_and_faster():
    """CE: validation 0.10 and 0.12 (mean 0.11, std 0.0141), 10 s an epoch. A loss at mean
    0.0960 (the floor 0.0959 passes) and 4 s may replace it; one at 0.09 may not, nor a level
    one that is slower, nor one seed of a loss (no spread to judge by)."""
    from benchmarks.tables import loss_rows

    variants = {"SASRec": {"model": "SASRec"}, "SS": {"model": "SASRec", "loss_vs": "SASRec"},
                "Low": {"model": "SASRec", "loss_vs": "SASRec"}, "Slow": {"model": "SASRec", "loss_vs": "SASRec"},
                "Once": {"model": "SASRec", "loss_vs": "SASRec"}}

    def run(variant, seed, valid, seconds):
        record = fake_record(variant, seed, 0.05)
        record.phases = {"train": {"epochs": 2, "train_seconds": 2 * seconds}}
        record.best_valid_result["ndcg@10"] = valid
        return record

    records = [run("SASRec", 1, 0.10, 10), run("SASRec", 2, 0.12, 10), run("SS", 1, 0.0950, 4), run("SS", 2, 0.0970, 4),
               run("Low", 1, 0.09, 4), run("Low", 2, 0.09, 4), run("Slow", 1, 0.11, 12), run("Slow", 2, 0.11, 12),
               run("Once", 1, 0.20, 1)]
    verdicts = {row[1]: (row[-1], row[-4], row[-3]) for row in loss_rows(records, variants)}
    assert verdicts == {
        "SS": ("level on validation and faster: may replace full CE", 4.0, 10.0),
        "Low": ("keep full CE: below CE by more than one seed std", 4.0, 10.0),
        "Slow": ("keep full CE: slower", 12.0, 10.0),
        "Once": ("one seed: no decision", 1.0, 10.0),
    }


def test_a_losss_speed_is_read_from_one_process_where_speed_json_timed_it():
    """Records from different sessions: the sampled-softmax RecGPT's epochs look slower (12 s
    against 10 s), but in one process (results/speed.json) its two phases took 3 + 7 s against
    CE's 10 + 15 s: 0.40x, so it is the faster. A loss speed.json did not time (gBCE) keeps the
    records' seconds."""
    from benchmarks.tables import loss_rows

    variants = {"RecGPT": {"model": "RecGPT"},
                "RecGPT-SS": {"model": "RecGPT", "loss_vs": "RecGPT",
                              "overrides": {"pretrain_loss": "sampled_softmax", "finetune_loss": "sampled_softmax"}},
                "RecGPT-gBCE": {"model": "RecGPT", "loss_vs": "RecGPT",
                                "overrides": {"pretrain_loss": "gbce", "finetune_loss": "gbce"}}}

    def run(variant, seed, seconds):
        record = fake_record(variant, seed, 0.05)
        record.phases = {"pretrain": {"epochs": 1, "train_seconds": seconds}}
        record.best_valid_result["ndcg@10"] = 0.10 + seed / 1000
        return record

    records = [run(name, seed, seconds) for name, seconds in (("RecGPT", 10), ("RecGPT-SS", 12), ("RecGPT-gBCE", 12))
               for seed in (1, 2)]
    speed = {"measurements": {key: {"seconds": seconds} for key, seconds in (
        ("recgpt_pretrain_epoch", 10.0), ("recgpt_prompt_tuning_epoch", 15.0),
        ("recgpt_pretrain_epoch_sampled_softmax", 3.0), ("recgpt_prompt_tuning_epoch_sampled_softmax", 7.0))}}
    rows = {row[1]: (row[-2], row[-1]) for row in loss_rows(records, variants, speed)}
    assert rows == {"RecGPT-SS": (0.4, "level on validation and faster: may replace full CE"),
                    "RecGPT-gBCE": (None, "keep full CE: slower")}


def test_a_loss_slower_in_one_process_is_kept_out_at_one_seed():
    """Speed measured in one process does not wait on seeds: a loss 1.2x full CE's time there
    keeps full CE after one seed, however close its validation score; one seed with no such
    measurement decides nothing."""
    from benchmarks.tables import loss_rows

    variants = {"SASRec": {"model": "SASRec"},
                "SASRec-gBCE": {"model": "SASRec", "loss_vs": "SASRec", "overrides": {"baseline_loss": "gbce"}},
                "SASRec-SS": {"model": "SASRec", "loss_vs": "SASRec", "overrides": {"baseline_loss": "sampled_softmax"}}}
    records = [fake_record(name, 1, 0.05, phases={"train": {"epochs": 1, "train_seconds": 5.0}}) for name in variants]
    speed = {"measurements": {"sasrec_whole_sequence_epoch": {"seconds": 10.0},
                              "sasrec_whole_sequence_epoch_gbce": {"seconds": 12.0}}}
    rows = {row[1]: (row[-2], row[-1]) for row in loss_rows(records, variants, speed)}
    assert rows == {"SASRec-gBCE": (1.2, "keep full CE: slower in one process"),
                    "SASRec-SS": (None, "one seed: no decision")}


def test_the_readme_block_gets_the_headline_and_nothing_else_changes(tmp_path):
    """The headline: each ``headline`` variant against the baseline best on validation (GRU4Rec
    here, although SASRec is better on test), on the seeds both have, per protocol."""
    variants = {"SASRec": {"model": "SASRec", "group": "main"}, "GRU4Rec": {"model": "GRU4Rec", "group": "main"},
                "RecGPT": {"model": "RecGPT", "group": "main", "headline": "RecGPT"},
                "RecGPT-N5": {"derived_from": "RecGPT", "parent": "RecGPT", "group": "ablation", "description": "N=5"},
                "SASRec-masked": {"derived_from": "SASRec", "parent": "SASRec", "group": "masked"},
                "RecGPT-masked": {"derived_from": "RecGPT", "parent": "RecGPT", "group": "masked", "headline": "RecGPT"}}
    records = [fake_record(name, seed, ndcg)
               for name, seed, ndcg in (("SASRec", 1, 0.10), ("GRU4Rec", 1, 0.09), ("GRU4Rec", 2, 0.09), ("RecGPT", 1, 0.12),
                                        ("RecGPT", 2, 0.12), ("RecGPT-N5", 1, 0.20), ("SASRec-masked", 1, 0.15),
                                        ("RecGPT-masked", 1, 0.18))]
    for record in records:
        if record.variant == "GRU4Rec":
            record.best_valid_result["ndcg@10"] = 0.30  # best on validation
    readme = tmp_path / "README.md"
    readme.write_text(f"# before\n{README_START}\nstale table\n{README_END}\nafter\n")
    update_readme(readme, records, variants)
    text = readme.read_text()
    assert text.startswith(f"# before\n{README_START}\n| dataset |") and text.endswith(f"{README_END}\nafter\n")
    rows = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert rows == [
        # The same difference on both seeds: an interval of width 0.
        "| tiny | ranked | RecGPT | 2 | 0.1200 ± 0.0000 | 0.1200 ± 0.0000 | 0.1200 ± 0.0000 | GRU4Rec | 0.0900 ± 0.0000 | +33.3% "
        "| +0.0300 [+0.0300, +0.0300] |",
        "| tiny | masked | RecGPT | 1 | 0.1800 | 0.1800 | 0.1800 | SASRec | 0.1500 | +20.0% | +0.0300 (one seed) |",
    ]
    readme.write_text("no block\n")
    with pytest.raises(SystemExit, match="has no"):
        update_readme(readme, records, variants)


def test_recgpt_against_sasrec_compares_the_seeds_both_have_and_phase_2_over_phase_1():
    """RecGPT has seeds 1 and 2, SASRec seeds 1 and 3: only seed 1 is compared, RecGPT valid
    0.11 and test 0.12 against 0.10 and 0.10, +10.0% and +20.0%. Phase 1 alone had 0.105 on
    validation: phase 2 adds +0.0050. Masked: RecGPT 0.15 against 0.20, no phase-1 row, so that
    cell is empty; without SASRec's row there is no ranked line."""
    from benchmarks.tables import against_sasrec_table

    def run(variant, seed, test, valid):
        record = fake_record(variant, seed, test)
        record.best_valid_result["ndcg@10"] = valid
        return record

    records = [run("RecGPT", 1, 0.12, 0.11), run("RecGPT", 2, 0.12, 0.50), run("SASRec", 1, 0.10, 0.10),
               run("RecGPT-pretrain-only", 1, 0.11, 0.105), run("RecGPT-masked", 1, 0.15, 0.15),
               run("SASRec-masked", 1, 0.20, 0.20), run("SASRec", 3, 0.30, 0.30)]
    assert against_sasrec_table(records)[2:] == [
        "| tiny | RecBole's protocol | 1 | +10.0% | +20.0% | +20.0% | +0.0050 |",
        "| tiny | history masked | 1 | -25.0% | -25.0% | -25.0% |  |",
    ]
    assert against_sasrec_table([r for r in records if r.variant != "SASRec"])[2:] == [
        "| tiny | history masked | 1 | -25.0% | -25.0% | -25.0% |  |"]


def test_migration_gives_old_records_the_parameter_counts_a_campaign_writes(tiny_campaign, tiny_data_path):
    from benchmarks.migrate import add_parameter_counts

    root = tiny_campaign("SASRec,RecGPT,RecGPT-pretrain-only")
    written = {variant: record(root, variant).parameters for variant in ("SASRec", "RecGPT", "RecGPT-pretrain-only")}
    for variant in written:  # as made before records carried counts
        path = record_path(root / "runs", "tiny", variant, 1)
        old = json.loads(path.read_text())
        del old["parameters"]
        path.write_text(json.dumps(old))
    changed = add_parameter_counts(root / "runs", tiny_data_path)
    assert sorted(path.parent.name for path in changed) == sorted(written)
    assert {variant: record(root, variant).parameters for variant in written} == written
    assert add_parameter_counts(root / "runs", tiny_data_path) == []  # nothing left to do


def test_a_row_with_a_run_made_at_a_dirty_revision_is_marked_and_explained():
    from benchmarks.tables import DIRTY_NOTE, markdown

    variants = {"SASRec": {"model": "SASRec", "group": "main"}, "GRU4Rec": {"model": "GRU4Rec", "group": "main"}}
    records = [fake_record("SASRec", 1, 0.1, git="abc1234", git_dirty=True, threads=1),
               fake_record("SASRec", 2, 0.1, git="abc1234", threads=1),
               fake_record("GRU4Rec", 1, 0.1, git="abc1234", threads=1)]
    table = markdown(records, variants)
    assert "| SASRec † | t | 2 |" in table and "| GRU4Rec | t | 1 |" in table
    assert DIRTY_NOTE in table


def test_a_run_trained_again_is_set_beside_its_stored_record(tmp_path, capsys):
    from benchmarks import reproduce
    from recbole_recgpt.comparison.store import record_path

    store = tmp_path / "runs"
    fake_record("SASRec", 2020, 0.05, threads=1, git="abc").write(record_path(store, "tiny", "SASRec", 2020))
    same = tmp_path / "tiny-SASRec-seed2020.json"
    fake_record("SASRec", 2020, 0.05, threads=1, git="def").write(same)
    assert reproduce.main([str(same), f"--store={store}"]) == 0
    assert "identical" in capsys.readouterr().out
    moved = tmp_path / "again" / "tiny-SASRec-seed2020.json"
    fake_record("SASRec", 2020, 0.0512, threads=1, git="def").write(moved)
    assert reproduce.main([str(moved), f"--store={store}"]) == 1
    out = capsys.readouterr().out
    assert "| test ndcg@10 | 0.0500 | 0.0512 | +0.0012 |" in out and "NOT identical" in out


def test_a_run_trained_again_agrees_only_when_every_validation_point_agrees(tmp_path, capsys):
    """The best epoch's metrics can agree while another epoch's validation score moved."""
    from benchmarks import reproduce
    from recbole_recgpt.comparison.store import record_path

    def run(curve):
        return fake_record("RecGPT", 2020, 0.05, threads=1, git=None,
                           phases={"pretrain": {"epochs": 2, "valid_curve": [[0, 0.04], [1, 0.05]]},
                                   "finetune": {"epochs": 3, "valid_curve": curve}})

    store = tmp_path / "runs"
    run([[0, 0.05], [1, 0.0506], [2, 0.0504]]).write(record_path(store, "tiny", "RecGPT", 2020))
    again = tmp_path / "tiny-RecGPT-seed2020.json"
    run([[0, 0.05], [1, 0.0507], [2, 0.0504]]).write(again)
    (tmp_path / "revision.txt").write_text("def5678\n")
    assert reproduce.main([str(again), f"--store={store}"]) == 1
    out = capsys.readouterr().out
    assert "| epochs | 2+3 | 2+3 | |" in out and "| revision | None | def5678 | |" in out
    assert "finetune validation curve: 1 of 3 points differ (epoch 1 0.0506 -> 0.0507)" in out
    assert "NOT identical" in out and "pretrain validation" not in out


def test_a_search_is_shown_ranked_by_validation_with_the_unfinished_trials_last(tmp_path):
    path = tmp_path / "search.csv"
    columns = ["trial", "status", "best_valid_score", "epochs_trained", "seconds", "params"]
    trials = [
        ("1", "stopped", "0.0300", "10", "100", {"learning_rate": 0.002, "mask_ratio": 0.2}),
        ("2", "failed", "", "0", "1", {"learning_rate": 0.001, "mask_ratio": 0.4}),
        ("3", "ok", "0.0250", "80", "900", {"learning_rate": 0.001, "mask_ratio": 0.2}),
        ("4", "ok", "0.0310", "95", "1000", {"learning_rate": 0.0005, "mask_ratio": 0.2}),
    ]
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([*row[:5], json.dumps(row[5])] for row in trials)
    (tmp_path / "search-ranked.md").write_text("Command: `python run_hyper.py ...` (git abc1234, seed 2020)\n")
    lines = search_tables({"X-tuned": {"search": str(path)}, "Y": {"search": str(tmp_path / "none.csv")}, "Z": {}})
    table = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    # Completed trials by validation first, then the stopped, then the failed one.
    assert table == [
        "| 1 | 0.0005 | 0.2 | ok | 0.0310 | 95 | 1000 |",
        "| 2 | 0.001 | 0.2 | ok | 0.0250 | 80 | 900 |",
        "| 3 | 0.002 | 0.2 | stopped | 0.0300 | 10 | 100 |",
        "| 4 | 0.001 | 0.4 | failed |  | 0 | 1 |",
    ]
    assert "Command: `python run_hyper.py ...` (git abc1234, seed 2020)" in lines
    assert lines[-1] == "Not run yet." and not any("Z" in line for line in lines)
    assert "In progress: 4 trial(s) so far; the row waits for the search to finish." in lines
    (tmp_path / "search-best.yaml").write_text("learning_rate: 0.0005\n")  # the search finished
    assert not any(line.startswith("In progress") for line in search_tables({"X-tuned": {"search": str(path)}}))


def test_what_a_run_trained_again_changed_is_named_metric_by_metric_and_point_by_point():
    from benchmarks.store import differences

    def run(test_ndcg, curve):
        record = fake_record("SASRec", 1, 0.05, phases={"train": {"epochs": len(curve), "valid_curve": curve}})
        record.test_result["ndcg@10"] = test_ndcg
        return record

    before = run(0.04, [[0, 0.03], [1, 0.05]])
    assert differences(before, run(0.04, [[0, 0.03], [1, 0.05]])) == []
    assert differences(before, run(0.0401, [[0, 0.0301], [1, 0.05], [2, 0.049]])) == [
        "test ndcg@10 0.04 -> 0.0401",
        "train validation curve: 1 of 2 points differ (epoch 0 0.03 -> 0.0301)",
        "train validation curve: 2 epochs -> 3",
    ]
