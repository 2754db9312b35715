"""The run record: what one run of a model on a dataset did, as one versioned JSON file.

``run_recgpt`` returns a :class:`RunRecord` (and writes it as its ``result_file``), the
comparison store keeps one per (dataset, variant, seed), and a tuning trial's row is read
off one. Every writer goes through :meth:`RunRecord.write` (one atomic write, fields in
the class's order, every field written) and every reader
through :meth:`RunRecord.read` / :meth:`RunRecord.from_dict`, which bring a record written
by older code up to :data:`SCHEMA_VERSION` with one function per older shape
(:data:`MIGRATIONS`), so no reader needs a ``.get`` fallback.

Per-user test results are kept compactly as *hit ranks* (:func:`hit_ranks`): for each
test user, the 0-based rank of its one positive item in the top-``k`` list, or none. From
them every user's NDCG@k and HR@k follow exactly (:meth:`RunRecord.per_user_test`), so a
paired test of two runs needs neither checkpoint.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from recbole_recgpt.files import write_text_atomically

# 1: the comparison store's dicts and run_recgpt's result files, before this module (no
#    ``schema`` key). 2: this class.
SCHEMA_VERSION = 2

# One character per test user in ``test_hit_ranks["ranks"]``: the rank as a base-36 digit,
# or NO_HIT. A character rather than a JSON number, because the store's records are
# indented one value per line and a list of 20,000-35,000 users would be as many lines.
RANK_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
NO_HIT = "-"


@dataclass
class RunRecord:
    """One run. Fields in the order :meth:`to_dict` writes them.

    ``phases``: ``{phase name: {"epochs", "train_seconds", "valid_seconds", "wall_seconds",
    "valid_curve": [[epoch in the phase, valid score], ...], "checkpoint", ...}}`` in
    training order, as the trainer keeps them. ``git`` is the revision of the code that ran
    and ``git_dirty`` whether what a run executes or reads had uncommitted changes.
    ``wall_s`` is the run's wall time (a derived row's: its scoring; ``training_wall_s`` the
    parent's training it reports); ``threads`` torch's threads (the last attempt's).
    """

    # what ran
    dataset: str
    model: str
    variant: Optional[str] = None  # the comparison's name for the setting; None outside a campaign
    seed: Optional[int] = None
    trainer: Optional[str] = None  # the trainer's display name
    # what it scored (RecBole's metric keys, e.g. "ndcg@10"); test None when only trained part way
    best_valid_result: Optional[dict] = None
    test_result: Optional[dict] = None
    # how it trained
    phases: dict = field(default_factory=dict)
    wall_s: Optional[float] = None
    training_wall_s: Optional[float] = None
    last_attempt_wall_s: Optional[float] = None
    world_size: int = 1
    threads: Optional[int] = None
    # provenance
    torch_version: Optional[str] = None
    parameters: Optional[dict] = None  # {"trainable": n, "frozen": m}
    git: Optional[str] = None
    git_dirty: bool = False
    git_written_as: Optional[str] = None  # what a record whose ``git`` was corrected had said
    resumed: bool = False
    attempts: Optional[list] = None  # [{"git", "started", "threads"}] of a resumed run's attempts
    finished: Optional[str] = None
    command: Optional[str] = None  # the run_recgpt.py command that makes the same run
    campaign_command: Optional[str] = None
    settings_hash: Optional[str] = None
    checkpoint: Optional[str] = None
    # lineage: a row scored from, or trained on, another run's checkpoint
    derived_from: Optional[str] = None
    derived_checkpoint: Optional[str] = None
    started_from: Optional[str] = None
    parent_hash: Optional[str] = None
    adopted: bool = False  # made by run_recgpt.py, stored by the campaign
    same_run_as: Optional[str] = None
    remade: Optional[dict] = None  # a run trained again: whether it reproduced the one it replaced
    config: dict = field(default_factory=dict)  # the resolved config, JSON-ready
    test_hit_ranks: Optional[dict] = None  # per-user test results (:func:`hit_ranks`)

    def __getitem__(self, key):
        """``record["test_result"]``: the dict ``run_recgpt`` returned before 0.3 keeps working."""
        if not isinstance(key, str) or not hasattr(self, key):
            raise KeyError(key)
        return getattr(self, key)

    # --- derived from the fields, never stored ---------------------------------------------

    @property
    def epochs(self):
        """The epochs of each phase joined by ``+`` (``"12+30"``), as the tables show them."""
        return "+".join(str(phase["epochs"]) for phase in self.phases.values())

    @property
    def phase_epochs(self):
        return {name: phase["epochs"] for name, phase in self.phases.items()}

    @property
    def total_epochs(self):
        return sum(self.phase_epochs.values())

    @property
    def valid_curve(self):
        """``[(global epoch, valid score, phase)]``: the phases one after the other, epochs
        counted 1, 2, ... across them."""
        points, offset = [], 0
        for name, phase in self.phases.items():
            points += [(offset + epoch + 1, score, name) for epoch, score in phase.get("valid_curve", [])]
            offset += phase["epochs"]
        return points

    @property
    def best_valid_score(self):
        """The ``valid_metric`` of the best validation, the score that selected the model."""
        if self.best_valid_result is None:
            return None
        return self.best_valid_result[self.config["valid_metric"].lower()]

    @property
    def revision(self):
        """``git`` as a string that says both: ``<revision>`` or ``<revision>-dirty``."""
        return None if self.git is None else self.git + ("-dirty" if self.git_dirty else "")

    def per_user_test(self, k=10):
        """``(user ids, {"ndcg@k": values, "hit@k": values})`` of the test users in user-id
        order, from :attr:`test_hit_ranks`; None when the record has none (or a shorter list)."""
        stored = self.test_hit_ranks
        if stored is None or k > stored["topk"]:
            return None
        users = np.concatenate([np.arange(first, last + 1) for first, last in stored["users"]])
        ranks = np.array([-1 if char == NO_HIT else RANK_DIGITS.index(char) for char in stored["ranks"]])
        hit = (ranks >= 0) & (ranks < k)
        # One positive per user: the ideal DCG is 1, the DCG 1 / log2(rank + 2) on a hit.
        ndcg = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
        return users, {f"ndcg@{k}": ndcg, f"hit@{k}": hit.astype(float)}

    # --- one reader and writer ---------------------------------------------------------------

    def to_dict(self):
        """The record as JSON-ready data: ``schema`` first, then every field in the class's
        order (a field not known for this run is null: readers never guess a default)."""
        return {"schema": SCHEMA_VERSION, **{spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, data):
        """A record from :meth:`to_dict`'s data, or from an older shape brought up to date
        (:data:`MIGRATIONS`); a key that is no field raises ``ValueError``."""
        data = dict(data)
        version = data.pop("schema", 1)
        if version > SCHEMA_VERSION:
            raise ValueError(f"a run record of schema {version}, newer than this code's ({SCHEMA_VERSION}); update the package")
        while version < SCHEMA_VERSION:
            data = MIGRATIONS[version](data)
            version += 1
        unknown = set(data) - {spec.name for spec in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"a run record with keys no schema-{SCHEMA_VERSION} record has: {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def write(self, path):
        """Write the record to ``path``, a whole file or none."""
        write_text_atomically(path, self.to_json())

    @classmethod
    def read(cls, path):
        """The record in ``path``, or None when there is no such file."""
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text())) if path.is_file() else None


# --- older shapes --------------------------------------------------------------------------


def split_revision(text):
    """``(revision, dirty)`` of ``<revision>`` or ``<revision>-dirty`` (None: ``(None, False)``),
    the form a revision is told in outside records (and was in schema 1)."""
    if text is not None and text.endswith("-dirty"):
        return text[: -len("-dirty")], True
    return text, False


def store_record_v1(data):
    """The comparison store's dict before schema 2: the same fields, except ``epochs`` (the
    phases' epochs joined by ``+``, now derived) and a ``git`` that carried ``-dirty``."""
    data = dict(data)
    epochs = data.pop("epochs")
    written = "+".join(str(phase["epochs"]) for phase in data["phases"].values())
    if epochs != written:
        raise ValueError(f"a run record whose epochs {epochs!r} are not its phases' ({written!r})")
    data["git"], data["git_dirty"] = split_revision(data.get("git"))
    return data


def result_file_v1(data):
    """``run_recgpt``'s result file before schema 2: no seed, trainer or provenance, and a
    ``best_valid_score`` that is the ``valid_metric`` of ``best_valid_result`` (now derived)."""
    data = dict(data)
    data.pop("best_valid_score")
    data["seed"] = data["config"].get("seed")
    return data


def record_v1(data):
    """Schema 1 had two shapes: a result file has ``best_valid_score``, a store record ``epochs``."""
    return result_file_v1(data) if "best_valid_score" in data else store_record_v1(data)


MIGRATIONS = {1: record_v1}  # schema version -> the function that makes it the next version


# --- per-user test results -----------------------------------------------------------------


def hit_ranks(users, topk_rows):
    """``test_hit_ranks`` of an evaluation, or None when it cannot be kept exactly.

    ``users``: ``[U]`` user ids in the evaluation's order; ``topk_rows``: RecBole's
    ``rec.topk`` of the same users, ``[U, k + 1]``: 1 where the ranked item is a positive of
    the user, then the user's number of positives. Kept: ``{"topk": k, "users": [[first,
    last], ...] (runs of consecutive ids), "ranks": one character per user in id order}``,
    the character the 0-based rank of the user's positive (:data:`RANK_DIGITS`) or
    :data:`NO_HIT`. Only an evaluation with one positive per user and each user once (the
    leave-one-out protocol) is kept: with more, a rank would not say the user's NDCG.
    """
    users = np.asarray(users).astype(np.int64)
    rows = np.asarray(topk_rows)
    if not len(users) or len(users) != len(rows) or len(np.unique(users)) != len(users) or (rows[:, -1] != 1).any():
        return None
    hits = rows[:, :-1][:, : len(RANK_DIGITS)]
    ranks = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)[np.argsort(users)]
    users = np.sort(users)
    breaks = np.flatnonzero(np.diff(users) != 1)
    firsts, lasts = np.r_[users[0], users[breaks + 1]], np.r_[users[breaks], users[-1]]
    return {
        "topk": int(hits.shape[1]),
        "users": [[int(first), int(last)] for first, last in zip(firsts, lasts)],
        "ranks": "".join(NO_HIT if rank < 0 else RANK_DIGITS[rank] for rank in ranks),
    }
