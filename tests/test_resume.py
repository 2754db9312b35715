"""Interrupted runs resume to the same numbers, and say with which command; the same seed gives the same numbers."""

import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recbole_recgpt import cli, quick_start
from recbole_recgpt.cli import next_step, run_main
from recbole_recgpt.errors import ConfigError, Interrupted, ProcessKilled, TrainingError
from recbole_recgpt.quick_start import build, check_before_loading, resumed_config, run_recgpt
from recbole_recgpt.trainer import RecGPTTrainer, save_atomically
from recbole_recgpt.record import RunRecord
from tests.conftest import REPO, TINY_CONFIG, TINY_DATA
from tests.test_distributed import free_port
from tests.test_errors import tiny_args  # noqa: F401  (the fixture)

RUN = {**TINY_CONFIG, "epochs": 3, "finetune_epochs": 3, "stopping_step": 10}


def comparable(result):
    """What a run scored: from its RunRecord, or from the result file it wrote."""
    record = RunRecord.from_dict(result) if isinstance(result, dict) else result
    return {key: record[key] for key in ("best_valid_score", "best_valid_result", "test_result")}


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


# A run's printed command starts with the interpreter by its name: PATH finds this one first.
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
needs_gloo = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch was built without gloo")


def last_line(stderr):
    return stderr.strip().splitlines()[-1]


def worker_pids(launcher_pid):
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    return sorted(int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the processes through Linux's /proc")
@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=needs_gloo)])
def test_the_printed_command_finishes_an_interrupted_run_and_writes_its_result_file(nproc, settings, tmp_path, request):
    """Ctrl-C in phase 1 prints the command that continues; run verbatim, it is killed with
    SIGKILL in phase 2 (one of its processes, where it has several: the command is printed
    again; alone, nothing can print and the first is run again). That command writes the
    --result_file the first one was given, with the numbers of the same run left alone."""
    if nproc == 1:
        uninterrupted = request.getfixturevalue("uninterrupted")
    else:
        alone = {**settings, "checkpoint_dir": str(tmp_path / "alone-2"), "nproc": nproc, "port": free_port()}
        uninterrupted = run_recgpt("RecGPT", "tiny", config_dict=alone)
    folder = tmp_path / "run"
    folder.mkdir()
    where = [f"--nproc={nproc}", f"--port={free_port()}"] if nproc > 1 else []
    first = subprocess.Popen(
        [sys.executable, str(REPO / "run_recgpt.py"), "--dataset=tiny", f"--data_path={settings['data_path']}",
         *[f"--{key}={value}" for key, value in RUN.items()], *where, "--checkpoint_dir=saved", "--result_file=result.json"],
        cwd=folder, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.time() + 300
    while not glob.glob(str(folder / "saved" / "*-resume.pth")):
        assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the terminal signals every process of the run
    _, err = first.communicate(timeout=120)
    (resume_file,) = glob.glob(str(folder / "saved" / "*-resume.pth"))
    command = shlex.join([os.path.basename(sys.executable), str(REPO / "run_recgpt.py"),
                          f"--resume=saved/{Path(resume_file).name}", *where[:1]])
    assert (first.returncode, last_line(err)) == (2, f"interrupted; continue with: {command}")
    assert torch.load(resume_file, weights_only=False)["phase"] == "pretrain"

    second = subprocess.Popen(shlex.split(command), cwd=folder, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    assert any("Phase finetune" in line for line in second.stderr), "the resumed run never reached phase 2"
    workers = worker_pids(second.pid) if nproc > 1 else [second.pid]
    os.kill(workers[-1], signal.SIGKILL)
    _, err = second.communicate(timeout=120)
    if nproc > 1:
        assert second.returncode == 2
        assert last_line(err) == (
            f"error: process 1 of 2 was killed (SIGKILL); the other processes were stopped; continue with: {command}"
        )
        assert not any(alive(pid) for pid in workers)
    else:
        assert second.returncode == -signal.SIGKILL
    assert not (folder / "result.json").exists()

    third = subprocess.run(shlex.split(command), cwd=folder, env=ENV, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "Resuming phase finetune" in third.stderr
    written = json.loads((folder / "result.json").read_text())
    assert written["world_size"] == nproc
    assert written["checkpoint"].startswith("saved/")  # resumed where it started: the paths as given
    assert comparable(written) == comparable(uninterrupted)


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


def test_sigterm_before_the_first_resume_file_says_so_and_gives_the_command_to_start_again(capsys, tiny_args, monkeypatch):  # noqa: F811
    def terminated(config):
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler stops the job while it loads the data
        time.sleep(60)  # the handler raises first

    monkeypatch.setattr(quick_start, "build", terminated)
    monkeypatch.setattr(sys, "argv", ["run_recgpt.py"])
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        run_main(tiny_args)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "interrupted; nothing to resume from yet; start again with: "
        + shlex.join([os.path.basename(sys.executable), "run_recgpt.py", *tiny_args])
    )
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone with it


RESUME = "saved/RecGPT-tiny-Jan-02-2026_10-11-12-resume.pth"
ONE_MACHINE = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "localhost",
               "MASTER_PORT": "29500"}
SECOND_MACHINE = {**ONE_MACHINE, "RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "5678"}


def interrupted(resume_file):
    return Interrupted("interrupted", resume_file)


def killed(nproc, offset=0):
    return lambda resume_file: ProcessKilled("process 1 of 2 was killed (SIGKILL)", resume_file, nproc, offset)


@pytest.mark.parametrize(
    "argv0, torchrun, stopped, resume_file, expected",
    [
        ("run_recgpt.py", {}, interrupted, RESUME, f"continue with: python run_recgpt.py --resume={RESUME}"),
        ("bin/recbole-recgpt", {}, interrupted, RESUME, f"continue with: recbole-recgpt --resume={RESUME}"),
        (cli.__file__, {}, interrupted, RESUME, f"continue with: python -m recbole_recgpt.cli --resume={RESUME}"),
        ("run_recgpt.py", {}, killed(2), RESUME, f"continue with: python run_recgpt.py --resume={RESUME} --nproc=2"),
        ("run_recgpt.py", {}, killed(2, offset=2), RESUME,
         f"continue with: python run_recgpt.py --resume={RESUME} --nproc=2 --offset=2"),
        ("run_recgpt.py", ONE_MACHINE, interrupted, RESUME,
         f"continue with: torchrun --nproc-per-node=2 run_recgpt.py --resume={RESUME}"),
        ("run_recgpt.py", SECOND_MACHINE, interrupted, RESUME,
         "continue with: torchrun --nproc-per-node=2 --nnodes=2 --node-rank=1 --master-addr=10.0.0.1 --master-port=5678 "
         f"run_recgpt.py --resume={RESUME}"),
        ("run_recgpt.py", {}, interrupted, "/shared/my runs/R-resume.pth",
         "continue with: python run_recgpt.py '--resume=/shared/my runs/R-resume.pth'"),
        ("run_recgpt.py", {}, interrupted, None,
         "nothing to resume from yet; start again with: python run_recgpt.py --epochs=3 --result_file=r.json"),
        ("run_recgpt.py", {}, lambda _: KeyboardInterrupt(), None,
         "nothing to resume from yet; start again with: python run_recgpt.py --epochs=3 --result_file=r.json"),
    ],
    ids=["alone", "installed", "module", "launcher", "launcher-second-machine", "torchrun", "torchrun-second-machine", "elsewhere",
         "nothing-saved", "stopped-before-the-trainer"],
)
def test_the_next_step_is_the_command_the_user_would_type(tmp_path, monkeypatch, argv0, torchrun, stopped, resume_file, expected):
    commands = tmp_path / "bin"  # where PATH finds the interpreter and the installed command
    commands.mkdir()
    for name in ("python", "recbole-recgpt"):
        (commands / name).touch(mode=0o755)
    monkeypatch.setenv("PATH", str(commands))
    monkeypatch.setattr(sys, "executable", str(commands / "python"))
    monkeypatch.setattr(sys, "argv", [str(tmp_path / argv0) if argv0.startswith("bin/") else argv0])
    for key in ONE_MACHINE:
        monkeypatch.delenv(key, raising=False)
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    if resume_file == RESUME:  # as the trainer knows it: absolute
        resume_file = str(tmp_path / RESUME)
    assert next_step(stopped(resume_file), ["--epochs=3", "--result_file=r.json"]) == expected


def test_a_resumed_run_stopped_before_it_saved_continues_with_its_own_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["run_recgpt.py"])
    monkeypatch.setattr(sys, "executable", "/opt/python3.12/bin/python3")  # not on PATH: named by its path
    argv = [f"--resume={RESUME}", "--nproc=2"]
    assert next_step(KeyboardInterrupt(), argv, resumed=True) == (
        f"continue with: /opt/python3.12/bin/python3 run_recgpt.py --resume={RESUME} --nproc=2"
    )


def test_a_run_saved_before_an_option_existed_resumes_with_its_default(tiny_config):
    config = tiny_config("SASRec")
    del config.final_config_dict["one_negative_loss"]  # as in a resume file written before it was added
    resumed = resumed_config({"config": config})
    assert resumed["one_negative_loss"] == "bpr"
    check_before_loading(resumed, resumed=True)
