"""Does a run trained again reproduce its stored record?

    python -m benchmarks.reproduce results/reproduce/*.json

Each result file (``run_recgpt``'s ``--result_file``, named
``<dataset>-<variant>-seed<seed>.json`` by ``benchmarks/queue/reproduce.sh``) is set beside
the stored record of the same dataset, variant and seed: the best-valid and test metrics,
the epochs of each phase, every point of each phase's validation curve, the thread count and
the revisions. Prints one table per file and whether all of it is identical. A result file
holds no revision (``run_recgpt`` does not know one); ``reproduce.sh`` writes the revision it
ran at beside the files, in ``revision.txt``.
"""

import argparse
import re
import sys
from pathlib import Path

from benchmarks.store import differences
from recbole_recgpt.comparison.store import record_path
from recbole_recgpt.record import RunRecord

NAME = re.compile(r"(?P<dataset>.+)-(?P<variant>[^-]+)-seed(?P<seed>\d+)\.json$")


def compare(path, store="results/runs"):
    """Lines of markdown: the new run beside its stored record; and whether they agree."""
    match = NAME.match(Path(path).name)
    if not match:
        raise SystemExit(f"error: {path} is not named <dataset>-<variant>-seed<seed>.json")
    new = RunRecord.read(path)
    stored = RunRecord.read(record_path(store, match["dataset"], match["variant"], int(match["seed"])))
    if stored is None:
        raise SystemExit(f"error: no stored record of {match['variant']} on {match['dataset']}, seed {match['seed']}")
    lines = [f"## {match['dataset']} {match['variant']} seed {match['seed']}", "",
             "| | stored | again | difference |", "| --- | ---: | ---: | ---: |"]
    for part in ("best_valid_result", "test_result"):
        for metric, value in getattr(stored, part).items():
            again = getattr(new, part)[metric]
            lines.append(f"| {'valid' if part == 'best_valid_result' else 'test'} {metric} | {value:.4f} | {again:.4f} | {again - value:+.4f} |")
    revision = new.revision or revision_beside(path)
    lines += [
        f"| epochs | {stored.epochs} | {new.epochs} | |",
        f"| threads | {stored.threads} | {new.threads} | |",
        f"| revision | {stored.revision} | {revision} | |",
        "",
    ]
    # The best epoch's metrics can agree while training went elsewhere (or while one
    # evaluation summed in another order): every validation point counts (the campaign's
    # judgement of a parent trained again, the same function).
    moved = differences(stored, new)
    lines += [line for line in moved if "validation curve" in line]
    lines += ["NOT identical" if moved else "identical", ""]
    return lines, not moved


def revision_beside(path):
    """The revision ``reproduce.sh`` ran at (``revision.txt`` beside the result file), if any."""
    written = Path(path).with_name("revision.txt")
    return written.read_text().strip() if written.is_file() else "not recorded"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="result files of runs trained again")
    parser.add_argument("--store", default="results/runs")
    args = parser.parse_args(argv)
    agree = True
    for path in args.results:
        lines, same = compare(path, args.store)
        print("\n".join(lines))
        agree &= same
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
