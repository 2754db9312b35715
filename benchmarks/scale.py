"""RecGPT's cost against catalogue size: seconds and peak memory per phase and loss.

    python -m benchmarks.scale --out=results/scale.json

Synthetic catalogues of 10^4, 10^5 and 10^6 items share their users and sequence lengths
(``--users`` histories of ``--length`` items). Each is a real catalogue: every item occurs
(RecBole counts only items that occur), at a random place; the other interactions draw items
with power-law popularity (the r-th most popular in proportion to ``r^-exponent``). For every
catalogue and loss (full-softmax ``ce``, ``sampled_softmax``, ``gbce``; the sampled ones with
sparse item-table gradients) a process of its own measures, from the project's defaults:

* ``pretrain``: one pre-training epoch;
* ``finetune``: one prompt-tuning epoch, writing the prompts of every training sequence included
  (``prompt_writing_seconds`` of it: paid once per phase, since the writer is frozen), by the
  network after one pre-training epoch (untimed when ``pretrain`` is not measured);
* ``eval``: one full evaluation of every test user, as the first after prompt-tuning: the
  training sequences' prompts are written (untimed, unless finetune just wrote them), so the
  evaluation prompts recall them and write one position per user; then two-stage recall.

``seconds`` is wall time, ``peak_mb`` the process's peak resident memory during the phase.
A phase that cannot allocate its memory under ``--memory_gb`` (the process's data limit) is
``out_of_memory``; one that would run past ``--budget`` seconds is stopped and ``skipped``,
with ``estimated_seconds`` from the share of its batches done, except for the ``--finish``
losses (sampled softmax), which run to the end. Every result is written as it
comes; a rerun keeps the ones measured with the same settings, except the ``--remeasure``
phases' from another git revision (of the run's ``--sizes`` and ``--losses`` only). Every row
names the invocation that measured it (``run_started``). Timing: run it alone.

    python -m benchmarks.scale --table=docs/performance.md   # measure nothing: rewrite the document's table
"""

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

if not __package__:  # run as `python benchmarks/scale.py`: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.documents import rewrite_block
from benchmarks.speed import PeakMemory, release_free_memory
from benchmarks.store import git_revision

SIZES = (10**4, 10**5, 10**6)
USERS, LENGTH = 24000, 50  # every catalogue's histories: users x items each
LOSSES = ("ce", "sampled_softmax", "gbce")
PHASES = ("pretrain", "finetune", "eval")
TABLE_START = "<!-- scale table: python -m benchmarks.scale --table=docs/performance.md -->"
TABLE_END = "<!-- end of scale table -->"


def write_catalogue(folder, name, n_items, n_users, length, exponent=1.0, seed=0):
    """``folder/name/name.inter``: ``n_users`` histories of ``length`` items in which each of
    ``n_items`` items occurs, the rest drawn with popularity ``rank^-exponent``."""
    slots = n_users * length
    if slots < n_items:
        raise ValueError(f"{n_users} users x {length} items hold {slots} interactions, fewer than {n_items} items")
    rng = np.random.default_rng(seed)
    items = np.empty(slots, dtype=np.int64)
    places = rng.permutation(slots)
    items[places[:n_items]] = np.arange(1, n_items + 1)
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -exponent
    items[places[n_items:]] = rng.choice(n_items, size=slots - n_items, p=popularity / popularity.sum()) + 1
    path = Path(folder) / name / f"{name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    users = np.repeat(np.arange(1, n_users + 1), length)
    times = np.tile(np.arange(length), n_users)
    with path.open("w") as file:
        file.write("user_id:token\titem_id:token\ttimestamp:float\n")
        np.savetxt(file, np.stack([users, items, times], axis=1), fmt="%d", delimiter="\t")
    return path


class OverBudget(Exception):
    """A phase ran past its time budget."""


class Budget:
    """Counts the batches of a phase (``batches`` in all) and stops it once ``seconds`` have passed."""

    def __init__(self, seconds):
        self.seconds, self.batches, self.done, self.start = seconds, None, 0, time.perf_counter()

    def estimate(self):
        """Seconds the whole phase would take, from the share of its batches done."""
        elapsed = time.perf_counter() - self.start
        return elapsed * self.batches / self.done if self.done and self.batches else None

    def counted(self, function):
        def call(*args, **kwargs):
            result = function(*args, **kwargs)
            self.done += 1
            if self.seconds is not None and time.perf_counter() - self.start > self.seconds and self.done < self.batches:
                raise OverBudget
            return result

        return call

    @contextlib.contextmanager
    def counting(self, model, method):
        """Inside, each call of ``model.<method>`` is one counted batch."""
        setattr(model, method, self.counted(getattr(type(model), method).__get__(model)))
        try:
            yield
        finally:
            delattr(model, method)


def out_of_memory(error):
    """Whether ``error`` is a failed allocation (torch raises those as ``RuntimeError``)."""
    return isinstance(error, MemoryError) or "alloc" in str(error)


def settings(loss, data_path, dataset):
    sampled = loss != "ce"
    return {
        "data_path": str(data_path), "dataset": dataset, "pretrain_loss": loss, "finetune_loss": loss,
        "sparse_item_gradients": sampled, "show_progress": False, "seed": 2020, "epochs": 1, "finetune_epochs": 1,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
    }


def measure_size(data_path, dataset, losses, phases, budget, finish=()):
    """In this process: every (loss, phase) asked for, one JSON line each on stdout."""
    from recbole_recgpt.config import create_config
    from recbole_recgpt.data import UserSequenceDataLoader
    from recbole_recgpt.quick_start import build

    for loss in losses:
        config = create_config("RecGPT", dataset, config_dict=settings(loss, data_path, dataset))
        torch.manual_seed(2020)
        _, (train_data, _, test_data), model, trainer = build(config)
        dataset_obj = train_data.dataset

        def pretrain(clock):
            loader = UserSequenceDataLoader(config, dataset_obj, neg_sample_num=0)
            clock.batches = len(loader)
            trainer.phase_name = "pretrain"
            with clock.counting(model, "calculate_loss"):
                trainer._train_epoch(loader, 0)

        def finetune(clock):
            model.start_prompt_tuning()
            trainer.phase_name = "finetune"
            loader = UserSequenceDataLoader(config, dataset_obj)
            # Prompt writing goes a batch at a time, then the epoch: one budget for both.
            clock.batches = 2 * len(loader)
            start = time.perf_counter()
            try:
                loader.write_prompts(clock.counted(model.prompted_training_batch))
            except OverBudget:
                # What writing the rest would take, at the pace so far: eval's preparation reads it.
                unwritten["seconds"] = (time.perf_counter() - start) * (len(loader) - clock.done) / max(clock.done, 1)
                raise
            # Written once per phase (the writer is frozen): later epochs do not pay it again.
            writing = {"prompt_writing_seconds": round(time.perf_counter() - start, 4)}
            with clock.counting(model, "calculate_loss"):
                trainer._train_epoch(loader, 0)
            return writing

        unwritten = {"seconds": 0.0}

        def write_training_prompts(clock):
            if clock.seconds is not None and unwritten["seconds"] > clock.seconds:
                raise OverBudget  # what finetune left unwritten takes longer than the budget
            if not model.prompt_tuned:
                model.start_prompt_tuning()
            loader = UserSequenceDataLoader(config, dataset_obj)
            clock.batches = len(loader)
            # Recalls what finetune wrote (all of it, or the share it wrote within its budget).
            loader.write_prompts(clock.counted(model.prompted_training_batch))

        def evaluate(clock):
            clock.batches = len(test_data)
            with clock.counting(model, "full_sort_top_k"):
                trainer.evaluate(test_data, load_best_model=False)

        # Prompts are written by the pre-trained network: when pre-training is not timed here, one
        # untimed epoch of it (or its budget's worth) comes first, as in a real run, since a
        # writer at its random initialisation holds items of one norm, which the ranking's norm
        # bound (recbole_recgpt/ranking.py) cannot use. A writer left there (pre-training short
        # of memory) writes slowly: the rows it writes for say so.
        writer_trained = True
        if "pretrain" not in phases and {"finetune", "eval"} & set(phases):
            try:
                pretrain(Budget(None if loss in finish else budget))
            except OverBudget:
                pass  # a writer trained for the budget's seconds
            except (MemoryError, RuntimeError) as error:
                if not out_of_memory(error):
                    raise
                writer_trained = False
        preparations = {"eval": write_training_prompts}
        for phase, run in (("pretrain", pretrain), ("finetune", finetune), ("eval", evaluate)):
            if phase not in phases:
                continue
            row = {"loss": loss, "phase": phase}
            if phase != "pretrain" and not writer_trained:
                row["writer"] = "initialisation"
            if phase in preparations:
                try:
                    preparations[phase](Budget(None if loss in finish else budget))
                except OverBudget:
                    left = f" (about {unwritten['seconds']:.0f} s of writing left after finetune's)" if unwritten["seconds"] else ""
                    row.update(status="skipped", seconds=None, peak_mb=None,
                               reason=f"its training prompts were not written within {budget:g} s{left}")
                    print(json.dumps(row), flush=True)
                    continue
            release_free_memory()
            with PeakMemory() as peak:
                clock = Budget(None if loss in finish else budget)
                try:
                    extra = run(clock) or {}
                    row.update(status="ok", seconds=round(time.perf_counter() - clock.start, 4), **extra)
                except OverBudget:
                    estimate = clock.estimate()
                    row.update(status="skipped", seconds=None, estimated_seconds=estimate and round(estimate, 1),
                               reason=f"stopped after {budget:g} s, {clock.done} of {clock.batches} batches done")
                except (MemoryError, RuntimeError) as error:
                    if not out_of_memory(error):
                        raise
                    row.update(status="out_of_memory", seconds=None, reason=str(error).splitlines()[0][:200])
                    if phase == "pretrain":
                        writer_trained = False
            row["peak_mb"] = round(peak.peak / 2**20)
            print(json.dumps(row), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/scale.json")
    parser.add_argument("--sizes", default=",".join(str(size) for size in SIZES))
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--length", type=int, default=LENGTH)
    parser.add_argument("--exponent", type=float, default=1.0)
    parser.add_argument("--budget", type=float, default=600, help="seconds a phase may run before it is stopped")
    parser.add_argument("--finish", default="sampled_softmax", help="losses whose phases are never stopped (comma-separated)")
    parser.add_argument("--memory_gb", type=float, default=20, help="data limit of each measuring process")
    parser.add_argument("--remeasure", default="", help="phases (comma-separated) whose stored results from "
                        "another git revision, for --sizes and --losses, are measured again, for code that changed them")
    parser.add_argument("--data_path", default="saved/scale-data")
    parser.add_argument("--table", metavar="DOCUMENT", help="measure nothing: rewrite DOCUMENT's table from --out")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: DATASET measured in this process
    parser.add_argument("--phases", default=",".join(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table:
        rewrite_block(args.table, TABLE_START, TABLE_END, scale_table(json.loads(Path(args.out).read_text())))
        return
    if args.measure:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        measure_size(args.data_path, args.measure, args.losses.split(","), args.phases.split(","), args.budget,
                     args.finish.split(","))
        return
    run_all(args)


def run_all(args):
    out = Path(args.out)
    shape = {"users": args.users, "length": args.length, "exponent": args.exponent, "budget": args.budget,
             "finish": args.finish, "memory_gb": args.memory_gb, "process": "one per catalogue and loss"}
    report = json.loads(out.read_text()) if out.exists() else {}
    if report.get("settings") != shape:
        report = {"settings": shape, "runs": []}
    report.update(git=git_revision(), torch=torch.__version__, threads=torch.get_num_threads())
    # Wall times here differ up to 3x between sessions: rows compare within one invocation, which
    # this names (UTC start time) in each row it measures.
    run_started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    remeasured = set(filter(None, args.remeasure.split(",")))
    if remeasured - set(PHASES):
        raise SystemExit(f"error: --remeasure={args.remeasure} names no phase of {', '.join(PHASES)}; pick from those")
    sizes, losses = [int(size) for size in args.sizes.split(",")], args.losses.split(",")
    # Only the catalogues and losses asked for are measured again; every other row is kept.
    report["runs"] = [run for run in report["runs"] if run["phase"] not in remeasured or run.get("git") == report["git"]
                      or run["items"] not in sizes or run["loss"] not in losses]
    measured = {(run["items"], run["loss"], run["phase"]) for run in report["runs"]}

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        plot(report, out.with_suffix(".png"))

    for items in sizes:
        dataset = f"scale-{items}"
        for loss in losses:
            wanted = [phase for phase in PHASES if (items, loss, phase) not in measured]
            if not wanted:
                print(f"{items} items, {loss}: kept", flush=True)
                continue
            if not (Path(args.data_path) / dataset / f"{dataset}.inter").exists():
                write_catalogue(args.data_path, dataset, items, args.users, args.length, args.exponent)
            # A process per catalogue and loss: its peak memory is that configuration's alone.
            command = [sys.executable, "-m", "benchmarks.scale", f"--measure={dataset}", f"--data_path={args.data_path}",
                       f"--losses={loss}", f"--phases={','.join(wanted)}", f"--budget={args.budget}",
                       f"--finish={args.finish}", f"--memory_gb={args.memory_gb}"]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
            reported = set()
            for line in process.stdout:
                if not line.startswith("{"):
                    continue
                row = json.loads(line)
                if row["phase"] not in wanted:
                    continue
                reported.add(row["phase"])
                report["runs"].append({"items": items, **row, "git": report["git"], "run_started": run_started,
                                       "command": " ".join(["python", "-m", "benchmarks.scale", *sys.argv[1:]])})
                print(f"{items} items, {row['loss']} {row['phase']}: {row['status']} "
                      f"{row.get('seconds') or row.get('estimated_seconds') or 0:.1f} s, {row['peak_mb']} MB", flush=True)
                save()
            if process.wait() != 0:
                # Killed from outside (the kernel's out-of-memory killer, or a stop): what it left is unmeasured.
                if process.returncode != -9:
                    raise SystemExit(f"error: measuring {loss} on {items} items failed (exit {process.returncode}); "
                                     "rerun to continue")
                for phase in wanted:
                    if phase not in reported:
                        report["runs"].append({"items": items, "loss": loss, "phase": phase, "status": "out_of_memory",
                                               "seconds": None, "peak_mb": None, "reason": "the process was killed",
                                               "git": report["git"], "run_started": run_started})
                save()
    save()


def catalogue_label(items):
    """``10^4`` for a power of ten, ``12,345`` otherwise."""
    power = len(str(items)) - 1
    return f"10^{power}" if items == 10**power else f"{items:,}"


def scale_cell(run):
    """One phase of one catalogue and loss: seconds and peak MB, or why there are none; and
    whether its prompts were written by a writer left at its initialisation."""
    if run is None:
        return "not measured"
    return _scale_cell(run) + (", untrained writer" if run.get("writer") == "initialisation" else "")


def _scale_cell(run):
    memory = f", {run['peak_mb']} MB" if run.get("peak_mb") is not None else ""
    if run["status"] == "ok":
        writing = run.get("prompt_writing_seconds")
        return f"{run['seconds']:.1f} s" + (f" ({writing:.1f} s)" if writing is not None else "") + memory
    if run["status"] == "out_of_memory":
        return "out of memory" + (f" at {run['peak_mb']} MB" if run.get("peak_mb") is not None else "")
    if run.get("estimated_seconds"):
        return f"skipped (~{run['estimated_seconds']:.0f} s){memory}"
    # Stopped before an estimate was possible: its reason says why (for an evaluation, the
    # training prompts it needs could not be written within the budget).
    return f"skipped: {run['reason']}" if run.get("reason") else "skipped"


def scale_table(report):
    """The markdown table of a ``results/scale.json`` report: a row per catalogue size and loss,
    a column per phase, and the revisions the row was measured at."""
    runs = {(run["items"], run["loss"], run["phase"]): run for run in report["runs"]}
    lines = ["| items | loss | pre-training epoch | prompt-tuning epoch (its prompt writing) | evaluation | revision |",
             "| --- | --- | --- | --- | --- | --- |"]
    for items in sorted({run["items"] for run in report["runs"]}):
        for loss in LOSSES:
            row = [runs.get((items, loss, phase)) for phase in PHASES]
            revisions = sorted({run["git"][:7] for run in row if run and run.get("git")})
            cells = [scale_cell(run) for run in row]
            lines.append(f"| {catalogue_label(items)} | {loss.replace('_', ' ')} | {' | '.join(cells)} | {', '.join(revisions)} |")
    return lines


def plot(report, path):
    """Log-log seconds against catalogue size, a panel per phase and a line per loss; a hollow
    marker is an estimate (the phase was stopped at the budget), an x a phase out of memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(PHASES), figsize=(4 * len(PHASES), 3.6), sharey=True)
    for axis, phase in zip(axes, PHASES):
        for loss, color in zip(LOSSES, ("tab:red", "tab:blue", "tab:green")):
            runs = sorted((run for run in report["runs"] if run["phase"] == phase and run["loss"] == loss),
                          key=lambda run: run["items"])
            points = [(run["items"], run["seconds"] or run.get("estimated_seconds"), run["status"]) for run in runs]
            known = [(items, seconds) for items, seconds, _ in points if seconds]
            if known:
                axis.plot(*zip(*known), color=color, label=loss)
            for items, seconds, status in points:
                if status == "ok":
                    axis.plot(items, seconds, "o", color=color)
                elif seconds:
                    axis.plot(items, seconds, "o", mfc="none", color=color)
                elif status == "out_of_memory":
                    axis.axvline(items, color=color, linestyle=":", linewidth=1)
        axis.set(xscale="log", yscale="log", xlabel="items in the catalogue", title=phase)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds (hollow: estimated)")
    axes[0].legend(title="loss (dotted: out of memory)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
