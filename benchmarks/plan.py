"""What the comparison still lacks: the rows ``benchmarks/plan.yaml`` promises, against the store.

    python -m benchmarks.plan

Per dataset it prints how many planned rows are done and which are missing (no record) or
stale (a record made with other settings, which a campaign would run again), then the
campaign commands that fill the gaps and the CPU time the stored runs took (each record's
wall seconds times its torch threads). Nothing is trained or scored. A row derived from or
started from another run counts as done only while that run's record is current too, and
made from its checkpoints; a run whose checkpoints a missing row needs and this checkout
lacks is named, since the campaign trains it again first. A row whose config file does not
exist yet (a search's winner, written when the search finishes) is waiting, with its reason.
"""

import argparse
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import yaml

if not __package__:  # run as `python benchmarks/plan.py`: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.store import Run, cpu_seconds, load_variants
from recbole_recgpt.comparison.store import load_records, record_path
from recbole_recgpt.errors import ConfigError

PLAN_FILE = Path(__file__).resolve().parent / "plan.yaml"


def planned_runs(plan, variants):
    """``[(dataset, variant, seed)]`` of every block of the plan, in order, each once."""
    runs = []
    for block in plan:
        for name in block["variants"]:
            if name not in variants:
                raise ConfigError(f"the plan names variant {name!r}, which the variants file lacks; add or rename it")
        for dataset in block["datasets"]:
            for name in block["variants"]:
                for seed in block["seeds"]:
                    if (dataset, name, seed) not in runs:
                        runs.append((dataset, name, seed))
    return runs


def waiting_for(name, variants):
    """Why a variant cannot run yet: the first of its (or its ancestors') config files that does
    not exist, with the search that writes it. None when it can run."""
    spec = variants[name]
    for path in spec.get("config_files", []):
        if not Path(path).is_file():
            search = f"; its search writes it: {spec['search']}" if "search" in spec else ""
            return f"its config file {path} does not exist yet{search}"
    return waiting_for(spec["parent"], variants) if "parent" in spec else None


def run_states(store, runs, variants, shared):
    """``{(dataset, variant, seed): "done" | "stale" | "missing" | "waiting: <why>"}`` for the
    planned runs, and the finished runs a campaign trains again first because a missing child
    needs checkpoints of theirs that this checkout lacks."""
    current = {}

    def current_record(dataset, name, seed):
        key = (dataset, name, seed)
        if key not in current:
            spec = variants[name]
            parent = current_record(dataset, spec["parent"], seed) if "parent" in spec else None
            orphan = "parent" in spec and parent is None
            current[key] = None if orphan else Run(store, dataset, name, spec, seed, shared).current(parent)
        return current[key]

    states, remakes = {}, {}  # remakes: (dataset, variant, seed) -> the checkpoint kinds its children need
    for key in runs:
        reason = waiting_for(key[1], variants)
        if reason:
            states[key] = f"waiting: {reason}"
            continue
        if current_record(*key):
            states[key] = "done"
            continue
        states[key] = "stale" if record_path(store, *key).is_file() else "missing"
        dataset, name, seed = key
        parent_name = variants[name].get("parent")
        parent = current_record(dataset, parent_name, seed) if parent_name else None
        run = Run(store, dataset, name, variants[name], seed, shared)
        if parent and not run.parent_checkpoint_exists(parent):
            remakes.setdefault((dataset, parent_name, seed), set()).add(run.checkpoint_kind)
    return states, remakes


def campaign_commands(states, shared):
    """One ``benchmarks.compare`` command per dataset and seed set that runs every row not done."""
    todo = defaultdict(lambda: defaultdict(list))  # dataset -> variant -> seeds
    for (dataset, name, seed), state in states.items():
        if state in ("stale", "missing"):
            todo[dataset][name].append(seed)
    commands = []
    for dataset, seeds_of in todo.items():
        by_seeds = defaultdict(list)
        for name, seeds in seeds_of.items():
            by_seeds[tuple(seeds)].append(name)
        for seeds, names in by_seeds.items():
            words = ["python", "-m", "benchmarks.compare", f"--datasets={dataset}",
                     f"--seeds={','.join(map(str, seeds))}", f"--variants={','.join(names)}"]
            commands.append(shlex.join(words + [f"--{key}={value}" for key, value in shared.items()]))
    return commands


def core_hours(records):
    """CPU time of stored runs (:func:`~benchmarks.store.cpu_seconds`), in hours."""
    return sum(cpu_seconds(record) for record in records) / 3600


def report(states, remakes, store, shared):
    lines = []
    for dataset in dict.fromkeys(dataset for dataset, _, _ in states):
        rows = {key: state for key, state in states.items() if key[0] == dataset}
        done = sum(state == "done" for state in rows.values())
        lines.append(f"{dataset}: {done} of {len(rows)} planned rows done")
        for state in ("stale", "missing"):
            names = [f"{name} seed {seed}" for (_, name, seed), s in rows.items() if s == state]
            if names:
                lines.append(f"  {state}: {', '.join(names)}")
        waiting = defaultdict(list)
        for (_, name, seed), state in rows.items():
            if state.startswith("waiting: "):
                waiting[state.removeprefix("waiting: ")].append(f"{name} seed {seed}")
        for reason, names in waiting.items():
            lines.append(f"  waiting: {', '.join(names)} ({reason})")
    for (dataset, name, seed), kinds in remakes.items():
        if "final" in kinds or len(kinds) > 1:
            how = "trains it again first, then checks that it reproduces its record"
        else:
            how = (f"trains its phases through {next(iter(kinds))} again first, then checks that they reproduce "
                   "its record's validation curves")
        lines.append(f"{dataset} {name} seed {seed}: its checkpoints are not in this checkout; the campaign {how}")
    commands = campaign_commands(states, shared)
    if commands:
        header = "To fill the gaps:"
    elif all(state == "done" for state in states.values()):
        header = "Every planned row is done."
    else:
        header = "The waiting rows can run once their config files exist."
    lines += ["", header, *commands]
    records = load_records(store)
    lines += ["", f"CPU time of the {len(records)} runs in {store}: {core_hours(records):.1f} core-hours"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", default=str(PLAN_FILE))
    parser.add_argument("--store", default="results/runs")
    parser.add_argument("--variants_file", default=None)
    parser.add_argument("--data_path", default=None, help="passed on to the campaign commands")
    args = parser.parse_args(argv)
    variants = load_variants(args.variants_file) if args.variants_file else load_variants()
    plan = yaml.safe_load(Path(args.plan).read_text()) or []
    shared = {"data_path": args.data_path} if args.data_path else {}
    states, remakes = run_states(args.store, planned_runs(plan, variants), variants, shared)
    print(report(states, remakes, args.store, shared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
