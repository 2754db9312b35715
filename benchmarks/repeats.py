"""Where a stored run's hits come from when users repeat items (yelp does).

    python -m benchmarks.repeats --dataset=yelp --variants=BERT4Rec,SASRec-BCE \\
        --out=results/repeats-yelp.md

Each validation and test target is one of three kinds: the user's last history item again,
an earlier history item again, or an item new to the history the model sees (its latest
``MAX_ITEM_LIST_LENGTH`` items). Each stored run's checkpoint is
scored again under its own protocol (:func:`benchmarks.significance.score_stored_run`,
checked against the record; nothing is trained), and per split and kind the table gives the
users of that kind, the kind's share of NDCG@10 and HR@10 (summed over users and divided by
all users, so the three shares add up to the run's metric) and its hit rate (HR@10 within
the kind).
"""

import sys
from pathlib import Path

import numpy as np

if not __package__:  # run as `python benchmarks/repeats.py`: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.significance import publish, rescoring_parser, score_stored_run
from benchmarks.store import load_variants

KINDS = ("last item again", "earlier item again", "new item")


def target_kinds(eval_data):
    """``(user ids, kind index per user)`` of an evaluation loader's rows (one target per user)."""
    dataset = eval_data.dataset
    config, features = dataset.config, dataset.inter_feat
    history = features[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]]
    length, target = features[config["ITEM_LIST_LENGTH_FIELD"]], features[config["ITEM_ID_FIELD"]]
    last = history.gather(1, (length - 1).unsqueeze(1)).squeeze(1) == target
    seen = (history == target.unsqueeze(1)).any(dim=1)
    kind = np.where(last.numpy(), 0, np.where(seen.numpy(), 1, 2))
    return features[config["USER_ID_FIELD"]].numpy(), kind


def breakdown(users, values, eval_data):
    """``{kind: (users, NDCG@10 share, HR@10 share, hit rate)}`` of one scored split."""
    kind_users, kinds = target_kinds(eval_data)
    if len(kind_users) != len(users):
        raise SystemExit("error: the loader has more than one target per user; this needs a leave-one-out split")
    kind_by_user = dict(zip(kind_users.tolist(), kinds.tolist()))
    kind_of = np.array([kind_by_user[user] for user in users.tolist()])
    rows = {}
    for index, name in enumerate(KINDS):
        chosen = kind_of == index
        count = int(chosen.sum())
        rows[name] = (
            count, values["ndcg@10"][chosen].sum() / len(users), values["hit@10"][chosen].sum() / len(users),
            values["hit@10"][chosen].mean() if count else float("nan"),
        )
    return rows


def report(dataset, seed, tables):
    """Markdown: per variant and split, each kind's users, shares and hit rate, then the total."""
    lines = [
        f"## {dataset}, seed {seed}: NDCG@10 and HR@10 by kind of target",
        "",
        "| variant | split | target | users | NDCG@10 share | HR@10 share | hit rate |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (variant, split), rows in tables.items():
        for kind, (count, ndcg, hit, rate) in rows.items():
            lines.append(f"| {variant} | {split} | {kind} | {count} | {ndcg:.4f} | {hit:.4f} | {rate:.3f} |")
        total = [sum(row[i] for row in rows.values()) for i in range(3)]
        lines.append(f"| {variant} | {split} | all | {total[0]} | {total[1]:.4f} | {total[2]:.4f} | |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = rescoring_parser(__doc__, "stored variants, comma-separated")
    args = parser.parse_args(argv)
    variants = load_variants(args.variants_file) if args.variants_file else load_variants()
    names = args.variants.split(",")
    unknown = [name for name in names if name not in variants]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; see benchmarks/variants.yaml")
    shared = {"data_path": args.data_path} if args.data_path else {}
    reports = []
    for seed in [int(seed) for seed in args.seeds.split(",")]:
        tables = {}
        for name in names:
            for split in ("valid", "test"):
                users, values, eval_data = score_stored_run(args.store, args.dataset, name, variants, seed, shared, split)
                tables[name, split] = breakdown(users, values, eval_data)
        reports.append(report(args.dataset, seed, tables))
    publish("\n".join(reports), "benchmarks.repeats", argv, args.out)


if __name__ == "__main__":
    main()
