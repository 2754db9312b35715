"""One trial of a search: a normal run with the trial's parameters, summarised as a row.

Both tools run trials through :func:`run_trial`, so a trial trains, selects and tests exactly
as ``run_recgpt.py`` does with the same parameters (each phase keeps its best checkpoint on
validation, and the test result is that model's): the winner's yaml reproduces its numbers.
"""

from dataclasses import dataclass, field
from time import time

from recbole_recgpt.errors import RecGPTError
from recbole_recgpt.quick_start import run_recgpt

# A trial ends in one of these states. ``ok``, ``stopped`` and ``failed`` are final: a rerun
# of the search skips them. ``error`` (anything unforeseen: a crash, out of memory) is
# recorded too, but retried by a rerun.
OK, STOPPED, FAILED, ERROR = "ok", "stopped", "failed", "error"
FINAL = (OK, STOPPED, FAILED)


@dataclass
class SearchSettings:
    """What every trial of a search shares: the model, the dataset, the yaml files (absolute
    paths) and the fixed ``--key=value`` overrides."""

    model: str
    dataset: str
    config_files: list = field(default_factory=list)
    fixed: dict = field(default_factory=dict)


def run_trial(params, settings, epoch_callback=None):
    """Train, validate and test one combination; return its row (see :func:`trial_row`).

    The project's one-line errors (a combination that cannot work, a loss that is no longer
    finite) make a ``failed`` row; any other exception an ``error`` row. Neither stops the
    search. ``epoch_callback(epoch_idx, valid_score)`` sees every validation of every phase.
    """
    start = time()
    try:
        record = run_recgpt(
            model=settings.model,
            dataset=settings.dataset,
            config_files=settings.config_files,
            config_dict={**settings.fixed, **params},
            saved=True,
            epoch_callback=epoch_callback,
        )
    except RecGPTError as error:
        return trial_row(params, FAILED, seconds=time() - start, error=str(error))
    except Exception as error:  # a search of many trials goes on; the row says what happened
        return trial_row(params, ERROR, seconds=time() - start, error=f"{type(error).__name__}: {error}")
    return record_row(params, record, seconds=time() - start)


def record_row(params, record, seconds):
    """The row of a trial that ran to the end: every value read off its run's
    :class:`~recbole_recgpt.record.RunRecord`."""
    return trial_row(
        params, OK,
        best_valid_score=record.best_valid_score,
        valid=record.best_valid_result,
        test=record.test_result,
        epochs=record.total_epochs,
        phase_epochs=record.phase_epochs,
        seconds=seconds,
        checkpoint=record.checkpoint,
        valid_curve=[[epoch, score] for epoch, score, _ in record.valid_curve],
    )


def trial_row(params, status, best_valid_score=None, valid=None, test=None, epochs=0, phase_epochs=None,
              seconds=0.0, checkpoint=None, valid_curve=None, error=None):
    """A finished trial as the search records it.

    ``best_valid_score`` is the trial's ``valid_metric`` (for a stopped trial, the best it
    reached); ``valid`` / ``test`` hold RecBole's metric keys; ``epochs`` counts the epochs of
    all phases, ``phase_epochs`` each phase's; ``valid_curve`` is ``[global epoch, valid
    score]`` per validation, epochs counted 1, 2, ... across phases; ``error`` is one line.
    """
    return {
        "params": dict(params),
        "status": status,
        "best_valid_score": None if best_valid_score is None else float(best_valid_score),
        "valid": dict(valid or {}),
        "test": dict(test or {}),
        "epochs": int(epochs),
        "phase_epochs": dict(phase_epochs or {}),
        "seconds": round(float(seconds), 1),
        "checkpoint": checkpoint,
        "valid_curve": [list(point) for point in valid_curve or []],
        "error": None if error is None else " ".join(str(error).split()),
    }
