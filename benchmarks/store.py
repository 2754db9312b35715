"""The paper's result store: ``results/runs/<dataset>/<variant>/seed<seed>.json``, one record per run.

A *variant* is a named setting of a model (``benchmarks/variants.yaml``): a model and its
overrides, or a row *derived* from another variant's checkpoints (scored differently, not
retrained), or a phase 2 *started* from another variant's phase-1 checkpoint. The generic
store (records, claims, training what is missing, resuming, reusing a record whose settings
match) is :mod:`recbole_recgpt.comparison.store`; this module adds what the paper's campaign
needs on top: variants, the revision of this checkout, child rows and their parents'
checkpoints (derived rows, phase-2 rows, parents trained again), runs adopted from
``run_recgpt.py``.
"""

import copy
import dataclasses
import subprocess
import time
from pathlib import Path

import torch
import yaml

from recbole_recgpt.checkpoints import load_weights, read_checkpoint
from recbole_recgpt.comparison.store import Run as ComparisonRun, record_path, settings_differ
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.quick_start import build, run_record
from recbole_recgpt.record import split_revision

VARIANTS_FILE = Path(__file__).resolve().parent / "variants.yaml"


PARENT_KEYS = ("derived_from", "start_from")


def load_variants(path=VARIANTS_FILE):
    """``{name: spec}`` from the variants file. A spec has one of ``model`` (trained from
    scratch), ``derived_from`` (a parent's checkpoint scored differently) and ``start_from``
    (phase 2 trained from a parent's phase-1 checkpoint); the last two inherit the parent's
    model, ``config_files`` and overrides, then apply their own overrides.
    """
    variants = yaml.safe_load(Path(path).read_text()) or {}
    for name, spec in variants.items():
        kinds = [key for key in ("model", *PARENT_KEYS) if key in spec]
        if len(kinds) != 1:
            raise ConfigError(f"variant {name} in {path} needs exactly one of model, {', '.join(PARENT_KEYS)}")
        if kinds[0] == "model":
            continue
        parent = variants.get(spec[kinds[0]], {})
        if "model" not in parent:
            raise ConfigError(f"variant {name} needs a trained variant as its parent, not {spec[kinds[0]]!r}")
        spec["parent"] = spec[kinds[0]]
        spec["config_files"] = parent.get("config_files", [])
        spec["overrides"] = {**parent.get("overrides", {}), **spec.get("overrides", {})}
    return variants


# What a run executes or reads, relative to the repository's root.
RUN_INPUTS = ("recbole_recgpt", "benchmarks", "properties", "dataset", "pyproject.toml", "run_recgpt.py", "run_hyper.py")


def git_revision():
    """The revision of the checkout these benchmarks belong to (None outside git)."""
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here).stdout.strip()
    if not head:
        return None
    # Uncommitted changes to what a run executes or reads (the code, the yaml, the data): the
    # revision alone would not reproduce the run. The outputs campaigns rewrite (results/,
    # docs/results.md, the README's headline) and the queue do not count.
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", *(f":/{path}" for path in RUN_INPUTS), ":/!benchmarks/queue"], cwd=here
    ).returncode != 0
    return f"{head}-dirty" if dirty else head


# What this process runs is the code checked out when it started (a campaign can outlive
# several commits): records name that revision, not the one at the time they are written.
LOADED_REVISION = git_revision()


class Run(ComparisonRun):
    """One (dataset, variant, seed) of the paper's campaign: a variant's settings, its record
    file and checkpoints (``<checkpoint_dir>/campaign/<dataset>/<variant>/seed<seed>/``); a
    child row also has its parent's record to judge and use."""

    program = ("python", "run_recgpt.py")

    def __init__(self, store, dataset, variant, spec, seed, shared):
        checkpoint_dir = Path(shared.get("checkpoint_dir", "saved")) / "campaign" / dataset / variant / f"seed{seed}"
        super().__init__(store, dataset, variant, seed, spec.get("model"), spec.get("config_files", []),
                         {**shared, **spec.get("overrides", {})}, checkpoint_dir)
        self.spec = spec

    @property
    def variant(self):
        return self.name

    def code_revision(self):
        return LOADED_REVISION  # read when called: tests stand in other revisions

    def finished(self, config):
        """The stored record when it was made with these settings, else None. Which parent
        checkpoint a phase-2 child started from is :meth:`current`'s to judge."""
        ignored = ("pretrained_checkpoint",) if "start_from" in self.spec else ()
        return super().finished(config, ignored)

    def model_name(self, parent):
        """The model this run trains or scores: its own, or its parent record's."""
        return parent.model if parent else self.spec["model"]

    def current(self, parent=None):
        """The stored record when a campaign would keep it: made with today's settings and,
        for a child row, from this ``parent`` record. Else None."""
        if "start_from" in self.spec:
            self.start_from(parent)
        record = self.finished(self.config(self.model_name(parent)))
        if record and parent is not None:
            made_from_parent = record.parent_hash in settings_hashes_of(parent)
            if not made_from_parent or self.used_checkpoint(record) not in checkpoints_of(parent, self.checkpoint_kind):
                return None
        return record

    def used_checkpoint(self, record):
        """The parent checkpoint a child record was scored or trained from."""
        return record.checkpoint if "derived_from" in self.spec else record.config["pretrained_checkpoint"]

    def start_from(self, parent):
        """Make this run's phase 2 start from the parent run's phase-1 checkpoint. Only its
        path is needed to tell whether a stored record is current; training checks the file."""
        self.overrides["pretrained_checkpoint"] = self.parent_checkpoint(parent)

    @property
    def checkpoint_kind(self):
        """Which checkpoint of the parent this run uses: ``final`` or a phase name."""
        return self.spec.get("checkpoint", "final" if "derived_from" in self.spec else "pretrain")

    def parent_checkpoint(self, parent):
        return checkpoint_paths(parent)[self.checkpoint_kind]

    def parent_checkpoint_exists(self, parent):
        checkpoint = self.parent_checkpoint(parent)
        return bool(checkpoint) and Path(checkpoint).is_file()

    def existing_parent_checkpoint(self, parent):
        if not self.parent_checkpoint_exists(parent):
            raise FileNotFoundError(
                f"{self.variant}: checkpoint {self.parent_checkpoint(parent)} of {parent.variant} is gone; "
                "the campaign trains that variant again first (benchmarks.compare, not run_recgpt.py)"
            )
        return self.parent_checkpoint(parent)

    def train(self, campaign_command, parent=None):
        """Train to early stopping (resuming a killed attempt of the same settings); a phase-2
        child names the ``parent`` record it started from."""
        lineage = {}
        if parent:
            lineage = {"started_from": str(parent_path(self, parent)), "parent_hash": parent.settings_hash}
        return super().train(campaign_command, self.model_name(parent), **lineage)

    def remake(self, previous, campaign_command, kind="final"):
        """Train this finished run again with the same settings, seed and threads, because a child
        row needs its checkpoint ``kind`` and this checkout lacks it. For a phase's checkpoint,
        only the phases up to it are trained first: when they reproduce the record (the same
        validation curves), the record keeps its numbers and names the new checkpoint. Otherwise
        the run is trained to the end; its record keeps what the previous one reported. When the
        run reproduced it (the same validation curves and metrics), children made from the
        previous checkpoints stay current."""
        threads = torch.get_num_threads()
        torch.set_num_threads(previous.threads or threads)  # a CPU run's sums depend on its threads
        try:
            if kind != "final":
                record = self._remake_phases(previous, kind)
                if record:
                    return record
            record = self.train(campaign_command)  # continues the phases just trained
        finally:
            torch.set_num_threads(threads)
        moved = differences(previous, record)
        reproduced = not moved
        record.remade = {
            "reproduced": reproduced,
            "differences": moved,
            "previous": {
                "best_valid_result": previous.best_valid_result, "test_result": previous.test_result,
                "git": previous.revision, "finished": previous.finished, "wall_s": previous.wall_s,
                "threads": previous.threads,
            },
            "equivalent_checkpoints": equivalent_checkpoints(previous, record) if reproduced else {},
            "equivalent_settings_hashes": equivalent_settings_hashes(previous, record) if reproduced else [],
        }
        record.write(self.path)
        return record

    def _remake_phases(self, previous, last_phase):
        """The previous record with phase ``last_phase``'s checkpoint made again, when training
        the phases through it reproduced their validation curves; else None."""
        _, result, wall_seconds, extra = self._fit(self.model_name(None), last_phase)
        trained = result.phases
        if any(trained[name]["valid_curve"] != previous.phases[name]["valid_curve"] for name in trained):
            return None
        record = copy.deepcopy(previous)
        record.phases[last_phase]["checkpoint"] = trained[last_phase]["checkpoint"]
        record.remade = {
            "reproduced": True,
            "phases": list(trained),
            "previous": {"git": previous.revision, "finished": previous.finished},
            "equivalent_checkpoints": equivalent_checkpoints(previous, record),
            "equivalent_settings_hashes": equivalent_settings_hashes(previous, record),
            "wall_s": round(wall_seconds, 1),
            "threads": torch.get_num_threads(),
            **extra,
        }
        record.write(self.path)
        return record

    def derive(self, parent, campaign_command):
        """Score a checkpoint of the parent run with this variant's overrides (no training)."""
        which = self.checkpoint_kind
        checkpoint = self.existing_parent_checkpoint(parent)
        config = self.config(parent.model)
        start = time.time()
        trainer, valid_data, test_data = scorer(config, checkpoint)
        valid = trainer.evaluate(valid_data, load_best_model=False)
        test = trainer.evaluate(test_data, load_best_model=False)  # last: the test users' hit ranks are its
        phases = parent.phases if which == "final" else {which: parent.phases[which]}
        scored = run_record(config, trainer, valid, test, phases=phases, checkpoint=checkpoint)
        # What the row reports it inherits from the parent: training time is the parent's.
        record = self.record(config, scored, time.time() - start, campaign_command=campaign_command,
                             derived_from=str(parent_path(self, parent)), derived_checkpoint=which,
                             parent_hash=parent.settings_hash, training_wall_s=parent.wall_s)
        record.write(self.path)
        return record


def adopt(run, model, result, meta, parent=None):
    """Store a run made outside a campaign (``run_recgpt.py --result_file``) as this run's
    record, if its resolved config is this variant's: every setting it has must agree (a
    setting added to the code since counts at its default, the behaviour it ran with)."""
    config = run.config(model)
    differ = settings_differ(result.config, config, run.config_files, ignored=("pretrained_checkpoint",))
    if differ:
        raise ValueError(f"{meta['command']} is not variant {run.variant}: {', '.join(differ)} differ")
    extra = {"adopted": True}
    if parent:
        extra.update(started_from=str(parent_path(run, parent)), parent_hash=parent.settings_hash)
    git, dirty = split_revision(meta["git"])
    record = dataclasses.replace(
        run.record(config, result, meta["wall_s"], **extra),
        git=git, git_dirty=dirty, command=meta["command"], threads=meta["threads"],
    )
    record.write(run.path)
    return record


def checkpoint_paths(record):
    """``{"final": path, <phase>: path}`` of a trained run's record."""
    return {"final": record.checkpoint, **{name: phase["checkpoint"] for name, phase in record.phases.items()}}


def differences(before, after):
    """What a run trained again changed against its record, one line per moved best-valid or
    test metric and per phase whose validation curve moved (or whose epochs did); empty when
    it reproduced the record exactly."""
    lines = [
        f"{'valid' if part == 'best_valid_result' else 'test'} {metric} {value} -> {getattr(after, part).get(metric)}"
        for part in ("best_valid_result", "test_result")
        for metric, value in getattr(before, part).items() if getattr(after, part).get(metric) != value
    ]
    for phase, earlier in before.phases.items():
        curve = earlier.get("valid_curve") or []
        again = (after.phases.get(phase) or {}).get("valid_curve") or []
        points = [f"epoch {epoch} {score} -> {new}" for (epoch, score), (_, new) in zip(curve, again) if score != new]
        if points:
            lines.append(f"{phase} validation curve: {len(points)} of {len(curve)} points differ ({', '.join(points)})")
        if len(curve) != len(again):
            lines.append(f"{phase} validation curve: {len(curve)} epochs -> {len(again)}")
    return lines


def equivalent_checkpoints(previous, record):
    """``{kind: [paths]}``: the checkpoints of ``previous`` (and those it had reproduced) that
    hold what ``record``'s do, for a ``record`` that reproduced it; its own paths aside."""
    earlier = (previous.remade or {}).get("equivalent_checkpoints", {})
    own = checkpoint_paths(record)
    equivalent = {}
    for kind, path in checkpoint_paths(previous).items():
        paths = [p for p in dict.fromkeys([*earlier.get(kind, []), path]) if p != own[kind]]
        if paths:
            equivalent[kind] = paths
    return equivalent


def equivalent_settings_hashes(previous, record):
    """The settings hashes of ``previous`` (and of those it had reproduced) other than
    ``record``'s, for a ``record`` that reproduced it. A revision that adds a setting at its
    default changes the hash of the same settings; the rows made from ``previous`` stay
    current all the same."""
    return [h for h in dict.fromkeys(settings_hashes_of(previous)) if h != record.settings_hash]


def settings_hashes_of(record):
    """The hashes under which a run's children may have been made: its own, and those of
    earlier runs it reproduced exactly (:meth:`Run.remake`)."""
    return [record.settings_hash, *(record.remade or {}).get("equivalent_settings_hashes", [])]


def checkpoints_of(record, kind):
    """The paths that hold checkpoint ``kind`` of a run: its own, and those of earlier runs it
    reproduced exactly (:meth:`Run.remake`)."""
    return [checkpoint_paths(record)[kind], *(record.remade or {}).get("equivalent_checkpoints", {}).get(kind, [])]


def parent_path(run, parent):
    return record_path(run.path.parents[2], parent.dataset, parent.variant, parent.seed)


def scorer(config, checkpoint):
    """``(trainer, valid_data, test_data)`` that score ``checkpoint`` with ``config`` (no training)."""
    _, (_, valid_data, test_data), model, trainer = build(config)
    # A phase-1 checkpoint holds a prompt writer a pre-training-only model lacks.
    load_weights(model, read_checkpoint(checkpoint, "model", config["device"])["state_dict"], strict=False)
    return trainer, valid_data, test_data


def cpu_seconds(record):
    """CPU time a record's runs took, wall seconds times torch threads: its own run and, for a
    run trained again, the earlier run it replaced or the phases trained again beside it."""
    remade = record.remade or {}
    runs = ({"wall_s": record.wall_s, "threads": record.threads}, remade, remade.get("previous", {}))
    return sum(run.get("wall_s", 0) * (run.get("threads") or 1) for run in runs)

