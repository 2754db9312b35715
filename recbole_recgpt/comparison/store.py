"""The result store of a comparison: one record per finished run, ``<store>/<dataset>/<name>/seed<seed>.json``.

Each record is a :class:`~recbole_recgpt.record.RunRecord`. A :class:`Run` is one (dataset,
name, seed) of a comparison: the model and settings it trains with, its record file and the
folder of its checkpoints. Its lifecycle: a record made with the run's settings is kept
(:meth:`Run.current`; paths, devices and other settings that say where a run happens aside,
:func:`settings_differ`); otherwise the run is trained, continuing from the resume file a
killed attempt with the same settings left (:meth:`Run.train`). Several processes can share
a store: each trains a run only under its :func:`claim`.
"""

import contextlib
import dataclasses
import hashlib
import json
import shlex
import time
from pathlib import Path

import filelock
import torch

from recbole_recgpt.checkpoints import read_checkpoint
from recbole_recgpt.checks import inter_columns
from recbole_recgpt.config import complete_load_col, create_config, yaml_defaults
from recbole_recgpt.files import write_text_atomically
from recbole_recgpt.quick_start import jsonable, jsonable_config, run_recgpt
from recbole_recgpt.record import RunRecord, split_revision

# Config keys that say where or on what a run happens, not what it computes.
VOLATILE_KEYS = {
    "data_path", "checkpoint_dir", "device", "gpu_id", "use_gpu", "state", "show_progress", "log_wandb",
    "wandb_project", "shuffle", "worker", "local_rank", "nproc", "world_size", "ip", "port", "offset",
    "single_spec", "config_files", "benchmark_filename", "save_dataset", "save_dataloaders",
    "dataset_save_path", "dataloaders_save_path", "eval_batch_size",
}


def settings_hash(config):
    """Hash of a resolved RecBole config without its volatile keys."""
    settings = {k: v for k, v in config.final_config_dict.items() if k not in VOLATILE_KEYS}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_differ(stored, config, config_files=(), ignored=()):
    """The keys whose value in ``config`` is not the stored run's (volatile keys and
    ``ignored`` aside). A key the stored run lacks counts at its value in the run's yaml
    layers (the project's, then ``config_files``): an option is added to the code with the
    default that keeps the behaviour runs had before it."""
    mine = jsonable_config(config)
    defaults = yaml_defaults(config["model"], config["dataset"], config_files)
    missing = object()
    return [
        key for key, value in mine.items()
        if key not in VOLATILE_KEYS and key not in ignored
        and stored.get(key, jsonable(defaults.get(key, missing))) != value
    ]


def record_path(store, dataset, name, seed):
    return Path(store) / dataset / name / f"seed{seed}.json"


def load_records(store):
    """Every record in ``store``, in path order."""
    return [RunRecord.read(path) for path in sorted(Path(store).glob("*/*/seed*.json"))]


def run_command(program, model, dataset, overrides, config_files=()):
    """The command line (``program`` and its arguments) that makes the same run."""
    words = [*program, f"--model={model}", f"--dataset={dataset}"]
    if config_files:
        words.append(f"--config_files={' '.join(config_files)}")
    words += [f"--{key}={value}" for key, value in overrides.items()]
    return shlex.join(words)


class Run:
    """One (dataset, name, seed) of a comparison: its settings, record file and checkpoints.

    ``name`` is the row's name in the tables (the record's ``variant``); ``model`` what it
    trains; ``overrides`` its parameters (the seed is added); ``checkpoint_dir`` the folder
    that holds this run's checkpoints and resume files, and nothing else's.
    """

    # The command a record names as the one that makes the same run.
    program = ("recbole-recgpt",)

    def __init__(self, store, dataset, name, seed, model, config_files=(), overrides=None, checkpoint_dir="saved"):
        self.dataset, self.name, self.seed, self.model = dataset, name, seed, model
        self.path = record_path(store, dataset, name, seed)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.overrides = {**(overrides or {}), "seed": seed}
        self.config_files = list(config_files)

    def code_revision(self):
        """The revision of the code this process runs, for the records (None: not known)."""
        return None

    def config(self, model=None):
        """The run's resolved config, as its record keeps it."""
        config = create_config(model or self.model, self.dataset, self.config_files, self.overrides)
        # A run completes load_col from the .inter header (a dataset without yaml) when it
        # loads the data, and its record keeps the completed one: compare like with like.
        complete_load_col(config, inter_columns(config)[1])
        return config

    def finished(self, config, ignored=()):
        """The stored record when it was made with ``config``'s settings (``ignored`` aside), else None."""
        record = RunRecord.read(self.path)
        if record and not settings_differ(record.config, config, self.config_files, ignored):
            return record
        return None

    def current(self):
        """The stored record when it was made with this run's settings, else None."""
        return self.finished(self.config())

    def record(self, config, run, wall_seconds, **fields):
        """``run`` (the record a run or a scoring made) as this row's record: named, with its
        wall time, the revision and command that reproduce it."""
        git, dirty = split_revision(self.code_revision())
        return dataclasses.replace(
            run,
            variant=self.name,
            seed=self.seed,
            wall_s=round(wall_seconds, 1),
            threads=torch.get_num_threads(),
            git=git,
            git_dirty=dirty,
            command=run_command(self.program, config["model"], self.dataset, self.overrides, self.config_files),
            settings_hash=settings_hash(config),
            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
            **fields,
        )

    def train(self, campaign_command, model=None, **fields):
        """Train to early stopping (resuming a killed attempt of the same settings), write
        the record and return it; ``fields`` add to the record."""
        config, result, wall_seconds, extra = self._fit(model or self.model)
        record = self.record(config, result, wall_seconds, campaign_command=campaign_command, **extra, **fields)
        record.write(self.path)
        return record

    def _fit(self, model, last_phase=None):
        """``(config, result, wall seconds, record extras)`` of training this run (through
        ``last_phase`` only, when given), continuing its resume file if a killed attempt left one."""
        config = self.config(model)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        resume = self.resume_file(config)
        attempts = self._attempts(resume)
        start = time.time()
        # A resume file carries its run's settings (matched above), so none are passed with it.
        settings = None if resume else {**self.overrides, "checkpoint_dir": str(self.checkpoint_dir)}
        result = run_recgpt(model, self.dataset, self.config_files, settings, resume=resume, last_phase=last_phase)
        wall_seconds = time.time() - start
        extra = {"resumed": bool(resume), "attempts": attempts}
        if resume:
            # The phases' wall seconds add up every attempt's epochs; this attempt's clock does not.
            phase_seconds = sum(p["wall_seconds"] for p in result.phases.values())
            extra["last_attempt_wall_s"] = round(wall_seconds, 1)
            wall_seconds = max(wall_seconds, phase_seconds)
        return config, result, wall_seconds, extra

    def _attempts(self, resume):
        """Every attempt at this run so far, this one last: the code revision each ran (a
        resumed run may span commits), when it started and its torch threads (the record's
        ``threads`` is the last attempt's). Kept beside the resume files; an earlier attempt
        that left no account (older code) is listed with all three unknown (None)."""
        path = self.checkpoint_dir / "attempts.json"
        attempts = []
        if resume:
            unknown = {"git": None, "started": None, "threads": None}
            attempts = json.loads(path.read_text()) if path.is_file() else [unknown]
        attempts.append(
            {"git": self.code_revision(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
             "threads": torch.get_num_threads()}
        )
        write_text_atomically(path, json.dumps(attempts, indent=1) + "\n")
        return attempts

    def resume_file(self, config):
        """The resume file a killed attempt with ``config``'s settings left, if any."""
        for path in sorted(self.checkpoint_dir.glob("*-resume.pth")):
            state = read_checkpoint(path, "resume")
            if not settings_differ(jsonable_config(state["config"]), config, self.config_files):
                return str(path)
        return None


@contextlib.contextmanager
def claim(path):
    """An exclusive claim on a run, so several processes can share one store: yields True when
    this process holds it, False when another does. The operating system releases the claim
    (a ``flock`` through ``filelock``) when its process ends, however it ends."""
    lock = filelock.FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
