"""Side-by-side comparison campaigns: RecGPT and RecBole baselines, several datasets and seeds.

    python -m benchmarks.compare --datasets=amazon-beauty,amazon-toys \\
        --variants=Pop,GRU4Rec,SASRec,RecGPT,RecGPT-pretrain-only --seeds=2020,2021,2022

Variants are named in ``benchmarks/variants.yaml``. Every finished run is one JSON record
under ``results/runs/`` (``benchmarks/store.py``); a record with the same settings is reused,
so a killed campaign resumes (a killed RecGPT or whole-sequence run continues from its last
epoch) and campaigns made on different days add up. Several campaign processes may share a
queue: each claims a run with a lock file (released when its process ends). Derived variants (a stage of another run) are
scored from the parent's checkpoints right after it, never retrained; a parent whose checkpoints
this checkout lacks is trained again first (same settings and seed; its record says whether it
reproduced the stored numbers, and children of a reproduced run stay current). After each run the
tables (``results/comparison.csv``/``.md``/``.png``) are rebuilt from the whole store.
``--key=value`` overrides a parameter for every run; ``--threads`` sets torch's threads.
"""

import argparse
import shlex
import sys
import traceback
from pathlib import Path

import torch

if not __package__:  # run as `python benchmarks/compare.py`: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.store import Run, load_variants
from benchmarks.tables import build_tables
from recbole_recgpt.comparison.store import claim


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-100k")
    parser.add_argument("--variants", default="Pop,GRU4Rec,SASRec,RecGPT")
    parser.add_argument("--seeds", default="2020")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--store", default="results/runs")
    parser.add_argument("--results", default="results", help="folder of comparison.csv/.md/.png")
    parser.add_argument("--document", default="docs/results.md", help="the results document (headline and tables)")
    parser.add_argument("--readme", default="README.md", help="the file whose headline table is rewritten")
    parser.add_argument("--experiments", default="docs/experiments.md",
                        help="the file whose RecGPT-against-SASRec table is rewritten")
    parser.add_argument("--variants_file", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args, rest = parser.parse_known_args(argv)
    shared = {}
    for arg in rest:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key or not sep:
            parser.error(f"unrecognised argument {arg!r}; overrides are --key=value")
        shared[key] = value
    if args.data_path:
        shared["data_path"] = args.data_path
    return args, shared


def queue(variants, names):
    """The requested variants, each derived one right after its parent (parents added)."""
    ordered = []
    for name in names:
        if name not in variants:
            raise SystemExit(f"error: unknown variant {name!r}; known: {', '.join(variants)}")
        parent = variants[name].get("parent")
        for needed in ([parent] if parent else []) + [name]:
            if needed not in ordered:
                ordered.append(needed)
    return ordered


def run_one(run, parent_record, command):
    """Reuse, train or derive one run; returns its record (None when another process has it)."""
    record = run.current(parent_record)
    if record:
        print(f"{run.dataset} {run.variant} seed {run.seed}: kept ({run.path})", flush=True)
        return record
    with claim(run.path) as mine:
        if not mine:
            print(f"{run.dataset} {run.variant} seed {run.seed}: another campaign is running it", flush=True)
            return None
        if "derived_from" in run.spec:
            record = run.derive(parent_record, command)
        else:
            if parent_record:
                run.existing_parent_checkpoint(parent_record)
            record = run.train(command, parent_record)
    print(
        f"{run.dataset} {run.variant} seed {run.seed}: valid ndcg@10 {record.best_valid_result['ndcg@10']:.4f}, "
        f"test ndcg@10 {record.test_result['ndcg@10']:.4f}, epochs {record.epochs}, {record.wall_s:.0f} s",
        flush=True,
    )
    return record


def remake(run, record, kind, command):
    """Train a finished run again for the checkpoint ``kind`` a child row needs (:meth:`Run.remake`)."""
    how_far = "" if kind == "final" else f" through its {kind} phase"
    print(f"{run.dataset} {run.variant} seed {run.seed}: trained again{how_far}, its checkpoints are not in this "
          "checkout", flush=True)
    with claim(run.path) as mine:
        if not mine:
            raise RuntimeError(f"another campaign is training {run.variant} seed {run.seed} again; run this one after it")
        remade = run.remake(record, command, kind)
    phases = remade.remade.get("phases")
    if phases:
        print(f"{run.dataset} {run.variant} seed {run.seed}: reproduced its {', '.join(phases)} phase (the same "
              "validation curve); the record keeps its numbers", flush=True)
        return remade
    moved = remade.remade["differences"]
    outcome = f"NOT reproduced: {'; '.join(moved)}" if moved else "reproduced"
    print(f"{run.dataset} {run.variant} seed {run.seed}: {outcome} (valid ndcg@10 "
          f"{record.best_valid_result['ndcg@10']:.4f} before, {remade.best_valid_result['ndcg@10']:.4f} now)",
          flush=True)
    return remade


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, shared = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "-m", "benchmarks.compare", *argv])
    variants = load_variants(args.variants_file) if args.variants_file else load_variants()
    names = queue(variants, args.variants.split(","))
    failed = []
    for dataset in args.datasets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            records = {}
            for name in names:
                run = Run(args.store, dataset, name, variants[name], seed, shared)
                parent_name = variants[name].get("parent")
                parent = records.get(parent_name) if parent_name else None
                if parent_name and parent is None:
                    print(f"{dataset} {name} seed {seed}: waits for {parent_name}", flush=True)
                    continue
                try:
                    if parent and not run.current(parent) and not run.parent_checkpoint_exists(parent):
                        parent_run = Run(args.store, dataset, parent_name, variants[parent_name], seed, shared)
                        parent = records[parent_name] = remake(parent_run, parent, run.checkpoint_kind, command)
                    records[name] = run_one(run, parent, command)
                except Exception as error:  # one failed run must not end the campaign
                    traceback.print_exc()
                    failed.append(f"{dataset} {name} seed {seed}: {type(error).__name__}: {error}")
                    continue
                build_tables(args.store, args.results, variants, document=args.document, readme=args.readme,
                             experiments=args.experiments)
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
