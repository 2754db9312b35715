"""Validation curves of stored runs, side by side.

    python -m benchmarks.curves --dataset=amazon-beauty --variants=SASRec,RecGPT-paper \\
        --out=results/curves-amazon-beauty.png

Each record's phases are drawn one after the other (RecGPT: pre-training, then
prompt-tuning), validation NDCG@10 per epoch, from ``phases.<name>.valid_curve``.
"""

import argparse
from pathlib import Path

from recbole_recgpt.comparison.store import record_path
from recbole_recgpt.record import RunRecord


def curve(record):
    """``[(global epoch, score, phase)]`` over the record's phases in order."""
    return record.valid_curve


def plot(records, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for record in records:
        points = curve(record)
        ax.plot([p[0] for p in points], [p[1] for p in points], label=f"{record.variant} (seed {record.seed})")
        starts = [p for i, p in enumerate(points) if i and p[2] != points[i - 1][2]]
        for x, y, name in starts:
            ax.annotate(name, (x, y), fontsize=7)
    ax.set_xlabel("epoch (phases one after the other)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--variants", required=True)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--store", default="results/runs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    records = []
    for variant in args.variants.split(","):
        record = RunRecord.read(record_path(args.store, args.dataset, variant, args.seed))
        if record is None:
            raise SystemExit(f"error: no record of {variant} on {args.dataset}, seed {args.seed}, in {args.store}")
        records.append(record)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot(records, args.out, f"{args.dataset}: validation NDCG@10 per epoch")
    for record in records:
        print(record.variant, " ".join(f"{score:.4f}" for _, score, _ in curve(record)))


if __name__ == "__main__":
    main()
