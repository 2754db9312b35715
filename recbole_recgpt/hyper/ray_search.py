"""``--tool=ray``: trials in parallel with Ray Tune, losing ones stopped early by ASHA.

Ray runs each trial in a worker process with ``cpus_per_trial`` CPUs reserved and torch
limited to as many threads, so concurrent trials x threads never exceed the cores Ray was
given (a local instance of ``num_cpus``, or an existing cluster at ``address``). The driver
lists the trials (the grid, or the seeded random sample) and hands Ray only those the record
does not hold yet; every result comes back to the driver, which writes the record.

How RecGPT's two phases map onto ASHA's rungs: every validation of every phase is reported,
with ``global_epoch`` (ASHA's time attribute) counting epochs across phases: pre-training
epochs 1..E1, then prompt-tuning epochs E1+1..E1+E2 (E1 is where phase 1 early-stopped, so
it differs between trials). The rungs sit at global epochs ``grace_period * rf**k``; at each,
a trial goes on only if ``best_valid_score_so_far`` (its best validation in any phase so far)
is in the top 1/rf of the trials that reached that rung. Taking the best so far keeps a
trial from being stopped for the dip that a phase change can bring (prompt-tuning starts
from phase 1's best model, and is validated with prompts and two-stage recall). Baselines
have one phase, so global epochs are their epochs. ``max_t`` is the largest possible
``epochs + finetune_epochs`` plus one, so ASHA never ends a trial only for reaching it.

A rerun of the search replays the recorded validation curves of the finished trials into
the rungs first, so the trials that are left are judged against them as in an uninterrupted
search.
"""

import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler

from recbole_recgpt.errors import ConfigError
from recbole_recgpt.hyper.trial import ERROR, OK, STOPPED, run_trial, trial_row

TIME_ATTR = "global_epoch"
METRIC = "best_valid_score_so_far"


def start_ray(address=None, num_cpus=None):
    """Connect to the cluster at ``address``, or start a local instance of ``num_cpus`` CPUs
    (default: :func:`available_cpus`; no dashboard). Returns False, and does nothing, if Ray is already running here.

    Workers import this package from the same folder as the driver (its parent goes on their
    ``PYTHONPATH``), so they run the code the driver runs.
    """
    import ray

    if ray.is_initialized():
        return False
    package_parent = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    # Ray itself imports pkg_resources, which warns in every worker (see compat.py's pins).
    quiet = "ignore:pkg_resources is deprecated:UserWarning"
    runtime_env = {"env_vars": {"PYTHONPATH": python_path, "PYTHONWARNINGS": quiet}}
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus or available_cpus(), include_dashboard=False, runtime_env=runtime_env)
    return True


def available_cpus():
    """The cores this process may run on (``taskset``, cgroups), not all of the machine's,
    which is what Ray would count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class EpochReporter:
    """``epoch_callback`` of a Ray trial: reports each validation with its global epoch."""

    def __init__(self, bigger):
        self.bigger = bigger
        self.offset, self.last_epoch, self.best = 0, -1, None
        self.last = {TIME_ATTR: 0, METRIC: float("nan")}

    def __call__(self, epoch_idx, valid_score):
        from ray.air import session

        if epoch_idx <= self.last_epoch:  # the next phase counts its epochs from 0 again
            self.offset += self.last_epoch + 1
        self.last_epoch = epoch_idx
        score = float(valid_score)
        if self.best is None or (score > self.best if self.bigger else score < self.best):
            self.best = score
        self.last = {TIME_ATTR: self.offset + epoch_idx + 1, "valid_score": score, METRIC: self.best}
        session.report(dict(self.last))  # returns normally, or ends the trial if ASHA stops it


def ray_trial(config, trials, settings, threads, bigger):
    """The Ray trainable: trial ``config["trial"]`` of ``trials``, then its row to the driver.

    Checkpoints go to the trial's folder under the search's storage path (unless
    ``checkpoint_dir`` is given), beside Ray's own files of the trial.
    """
    import torch
    from ray.air import session

    torch.set_num_threads(threads)
    fixed = {"checkpoint_dir": os.path.join(session.get_trial_dir(), "saved"), **settings.fixed}
    reporter = EpochReporter(bigger)
    row = run_trial(trials[config["trial"]], replace(settings, fixed=fixed), epoch_callback=reporter)
    session.report({**reporter.last, "trial_row": json.dumps(row)})


class ReplayedASHA(AsyncHyperBandScheduler):
    """ASHA whose rungs can be filled with the validation curves of earlier trials."""

    def replay(self, curves, bigger):
        """``curves``: per trial, ``[global epoch, valid score]`` per validation."""
        for number, curve in enumerate(curves):
            trial, best = SimpleNamespace(trial_id=f"recorded-{number}"), None
            for epoch, score in curve:
                best = score if best is None else (max if bigger else min)(best, score)
                for bracket in self._brackets:  # private in ray 2.6.3; RecBole 1.2.1 pins ray <= 2.6.3
                    bracket.on_result(trial, epoch, self._metric_op * best)


class RecordTrials(Callback):
    """Driver side: each trial that ends becomes a row of the record."""

    def __init__(self, record, trials):
        self.record, self.trials, self.curves = record, trials, {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "valid_score" in result and "trial_row" not in result:
            self.curves.setdefault(trial.trial_id, []).append([result[TIME_ATTR], result["valid_score"]])

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if "trial_row" in result:
            self.record.add(json.loads(result["trial_row"]))
        elif TIME_ATTR in result:  # ASHA stopped it after this validation
            self.record.add(trial_row(
                self.trials[trial.config["trial"]], STOPPED, best_valid_score=result[METRIC],
                epochs=result[TIME_ATTR], seconds=result.get("time_total_s", 0.0),
                valid_curve=self.curves.get(trial.trial_id),
            ))

    def on_trial_error(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        self.record.add(trial_row(
            self.trials[trial.config["trial"]], ERROR, epochs=result.get(TIME_ATTR, 0),
            seconds=result.get("time_total_s", 0.0), error=_last_line(trial.error_file),
        ))


def _last_line(path):
    try:
        lines = [line.strip() for line in open(path, encoding="utf-8") if line.strip()]
    except (OSError, TypeError):
        lines = []
    return lines[-1] if lines else "the trial's worker process failed"


def run_ray_search(trials, settings, record, bigger, max_t, storage_path, name, address=None, num_cpus=None,
                   cpus_per_trial=1, grace_period=10, reduction_factor=2):
    """Run ``trials`` (parameter dicts) with Ray Tune; each ends as a row of ``record``."""
    import ray
    from ray import air, tune

    if not trials:
        return
    started = start_ray(address, num_cpus)
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < cpus_per_trial:  # Ray would wait for them forever
            raise ConfigError(f"cpus_per_trial={cpus_per_trial} exceeds the {cpus:g} CPUs of the Ray instance")
        scheduler = ReplayedASHA(
            time_attr=TIME_ATTR, metric=METRIC, mode="max" if bigger else "min", max_t=max_t,
            grace_period=min(grace_period, max_t), reduction_factor=reduction_factor, brackets=1,
        )
        scheduler.replay([row["valid_curve"] for row in record.rows if row["status"] in (OK, STOPPED)], bigger)
        trainable = tune.with_resources(
            tune.with_parameters(ray_trial, trials=trials, settings=settings, threads=cpus_per_trial, bigger=bigger),
            {"cpu": cpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(list(range(len(trials))))},
            tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1),
            run_config=air.RunConfig(
                name=name, storage_path=str(Path(storage_path).resolve()), callbacks=[RecordTrials(record, trials)],
                verbose=0, failure_config=air.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()
    finally:
        if started:
            ray.shutdown()
