"""Interrupted runs resume to the same numbers; the same seed gives the same numbers."""

import glob
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_recgpt.errors import ConfigError, TrainingError
from recbole_recgpt.quick_start import build, check_before_loading, resumed_config, run_recgpt
from recbole_recgpt.trainer import RecGPTTrainer, save_atomically
from tests.conftest import REPO, TINY_CONFIG, TINY_DATA

RUN = {**TINY_CONFIG, "epochs": 3, "finetune_epochs": 3, "stopping_step": 10}


def comparable(result):
    return {key: result[key] for key in ("best_valid_score", "best_valid_result", "test_result")}


@pytest.fixture
def settings(tiny_data_path, tmp_path):
    return {**RUN, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path / "saved")}


@pytest.fixture
def uninterrupted(settings, tmp_path):
    return run_recgpt("RecGPT", "tiny", config_dict={**settings, "checkpoint_dir": str(tmp_path / "alone")})


def test_same_seed_same_numbers(settings, uninterrupted):
    again = run_recgpt("RecGPT", "tiny", config_dict=settings)
    assert comparable(again) == comparable(uninterrupted)
    other_seed = run_recgpt("RecGPT", "tiny", config_dict={**settings, "seed": 7})
    assert comparable(other_seed) != comparable(uninterrupted)


class Killed(Exception):
    pass


@pytest.mark.parametrize("phase, epoch", [("pretrain", 0), ("pretrain", 2), ("finetune", 0), ("finetune", 1), ("finetune", 2)])
def test_a_run_interrupted_in_any_epoch_resumes_to_the_same_result(settings, uninterrupted, monkeypatch, phase, epoch):
    train_epoch = RecGPTTrainer._train_epoch

    def interrupted(self, train_data, epoch_idx, *args, **kwargs):
        if (self.phase_name, epoch_idx) == (phase, epoch):
            raise Killed
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(RecGPTTrainer, "_train_epoch", interrupted)
    with pytest.raises(Killed):
        run_recgpt("RecGPT", "tiny", config_dict=settings)
    monkeypatch.setattr(RecGPTTrainer, "_train_epoch", train_epoch)
    (resume_file,) = glob.glob(os.path.join(settings["checkpoint_dir"], "*-resume.pth"))
    resumed = run_recgpt(resume=resume_file)
    assert comparable(resumed) == comparable(uninterrupted)


def test_a_run_resumed_after_it_finished_repeats_its_result(uninterrupted, tmp_path):
    (resume_file,) = glob.glob(str(tmp_path / "alone" / "*-resume.pth"))
    assert comparable(run_recgpt(resume=resume_file)) == comparable(uninterrupted)


def test_a_run_stopped_after_phase_1_resumes_to_the_same_result(settings, uninterrupted):
    part = run_recgpt("RecGPT", "tiny", config_dict=settings, last_phase="pretrain")
    assert list(part["phases"]) == ["pretrain"] and part["test_result"] is None
    assert part["phases"]["pretrain"] == {**uninterrupted["phases"]["pretrain"], **timings(part["phases"]["pretrain"])}
    assert not glob.glob(os.path.join(settings["checkpoint_dir"], "*-finetune.pth"))
    (resume_file,) = glob.glob(os.path.join(settings["checkpoint_dir"], "*-resume.pth"))
    assert comparable(run_recgpt(resume=resume_file)) == comparable(uninterrupted)


def timings(phase):
    return {key: value for key, value in phase.items() if key.endswith("seconds") or key == "checkpoint"}


def test_last_phase_must_be_a_phase_of_the_trainer(settings, tiny_data_path):
    with pytest.raises(ConfigError, match="last_phase='warmup' is not a phase of RecGPT's trainer; use one of pretrain"):
        run_recgpt("RecGPT", "tiny", config_dict=settings, last_phase="warmup")
    with pytest.raises(ConfigError, match="not a phase of Pop's trainer; use one of train$"):
        run_recgpt("Pop", "tiny", config_dict={**TINY_DATA, "data_path": str(tiny_data_path)}, last_phase="pretrain")


def test_a_non_finite_loss_stops_the_phase_and_keeps_the_last_good_checkpoint(tiny_config, monkeypatch):
    config = tiny_config(stopping_step=10)
    _, (train, valid, _), model, trainer = build(config)
    calculate_loss = model.calculate_loss

    def diverging(interaction):
        loss = calculate_loss(interaction)
        return loss * torch.inf if (trainer.phase_name, trainer.epoch) == ("finetune", 1) else loss

    monkeypatch.setattr(model, "calculate_loss", diverging)
    with pytest.raises(TrainingError, match=r"phase finetune stopped: the training loss became (inf|nan) in epoch 1") as error:
        trainer.fit(train, valid)
    assert f"{trainer.checkpoint_stem}-finetune.pth" in str(error.value)
    good = torch.load(f"{trainer.checkpoint_stem}-finetune.pth", weights_only=False)
    assert good["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())


def test_checkpoints_are_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "state.pth"
    save_atomically({"epoch": 1}, path)

    def crash(state, file, **kwargs):
        with open(file, "wb") as partial:
            partial.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_atomically({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False)["epoch"] == 1


def test_sigkill_in_the_middle_of_prompt_tuning_then_resume(tmp_path, tiny_data_path):
    """A real process killed with SIGKILL during phase 2 continues from its resume file to
    the numbers of the same run left alone."""
    args = [f"--{key}={value}" for key, value in {**RUN, "epochs": 4, "finetune_epochs": 6}.items()]
    base = [sys.executable, str(REPO / "run_recgpt.py"), "--dataset=tiny", f"--data_path={tiny_data_path}", *args]

    def run(folder, *extra):
        folder.mkdir()
        return subprocess.run([*base, *extra, f"--result_file={folder / 'result.json'}"], cwd=folder,
                              capture_output=True, text=True, timeout=300)

    alone = run(tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    process = subprocess.Popen(base, cwd=killed_dir, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    in_phase_2 = False
    for line in process.stderr:
        in_phase_2 = in_phase_2 or "Phase finetune" in line
        if in_phase_2 and "epoch 2 training" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    (resume_file,) = glob.glob(str(killed_dir / "saved" / "*-resume.pth"))
    state = torch.load(resume_file, weights_only=False)
    assert state["phase"] == "finetune" and not state["phase_done"]

    resumed = subprocess.run([sys.executable, str(REPO / "run_recgpt.py"), f"--resume={resume_file}",
                              f"--result_file={killed_dir / 'result.json'}"], cwd=killed_dir,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming phase finetune" in resumed.stderr
    first = json.loads((tmp_path / "alone" / "result.json").read_text())
    second = json.loads((killed_dir / "result.json").read_text())
    assert comparable(second) == comparable(first)


def test_a_run_resumed_from_another_folder_reads_and_writes_where_the_command_it_continues_did(settings, uninterrupted, tmp_path, monkeypatch):
    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(started)
    relative = {"data_path": os.path.relpath(settings["data_path"]), "checkpoint_dir": "saved"}
    part = run_recgpt("RecGPT", "tiny", config_dict={**settings, **relative}, result_file="result.json", last_phase="pretrain")
    assert part["checkpoint"].startswith("saved/")
    (resume_file,) = glob.glob(str(started / "saved" / "*-resume.pth"))
    monkeypatch.chdir(elsewhere)
    resumed = run_recgpt(resume=resume_file)
    assert comparable(json.loads((started / "result.json").read_text())) == comparable(resumed) == comparable(uninterrupted)
    for checkpoint in (resumed["checkpoint"], resumed["phases"]["pretrain"]["checkpoint"]):
        assert Path(checkpoint).parent == started / "saved" and Path(checkpoint).is_file()
    assert not (elsewhere / "saved").exists() and not (elsewhere / "result.json").exists()


def test_a_result_file_given_to_the_resumed_run_replaces_the_remembered_one(settings, uninterrupted, tmp_path):
    run_recgpt("RecGPT", "tiny", config_dict=settings, result_file=tmp_path / "first.json", last_phase="pretrain")
    (resume_file,) = glob.glob(os.path.join(settings["checkpoint_dir"], "*-resume.pth"))
    run_recgpt(resume=resume_file, result_file=tmp_path / "second.json")
    assert json.loads((tmp_path / "first.json").read_text())["test_result"] is None  # phase 1's, left as it was
    assert comparable(json.loads((tmp_path / "second.json").read_text())) == comparable(uninterrupted)
    assert torch.load(resume_file, weights_only=False)["outputs"] == {"result_file": str(tmp_path / "second.json")}


def test_a_resume_file_from_before_outputs_were_kept_resumes_and_writes_no_result_file(settings, uninterrupted, tmp_path):
    run_recgpt("RecGPT", "tiny", config_dict=settings, result_file=tmp_path / "result.json", last_phase="pretrain")
    (resume_file,) = glob.glob(os.path.join(settings["checkpoint_dir"], "*-resume.pth"))
    state = torch.load(resume_file, weights_only=False)
    del state["outputs"]
    save_atomically(state, resume_file)
    (tmp_path / "result.json").unlink()
    assert comparable(run_recgpt(resume=resume_file)) == comparable(uninterrupted)
    assert not (tmp_path / "result.json").exists()


def test_a_run_saved_before_an_option_existed_resumes_with_its_default(tiny_config):
    config = tiny_config("SASRec")
    del config.final_config_dict["one_negative_loss"]  # as in a resume file written before it was added
    resumed = resumed_config({"config": config})
    assert resumed["one_negative_loss"] == "bpr"
    check_before_loading(resumed, resumed=True)
