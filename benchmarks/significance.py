"""Paired significance of two stored variants on the same test users.

    python -m benchmarks.significance --dataset=amazon-beauty \\
        --variants=RecGPT-masked,SASRec-masked --seeds=2020,2021,2022 \\
        --out=results/significance-amazon-beauty-masked.md

Differences between models here are often about 0.001 NDCG@10; the spread over seeds says
how much training noise moves a mean, this says whether one model beats the other on the
same users. Each run's per-user NDCG@10 and HR@10 come from its record's test hit ranks
(:meth:`~recbole_recgpt.record.RunRecord.per_user_test`); a record made before records kept
them has its checkpoint scored again on the test users instead (nothing is trained), with
RecBole's own metric classes. Either way their mean must equal the stored test result. Per seed, and for the per-user difference averaged
over seeds: the mean difference (first minus second), a 95% paired bootstrap interval and
the paired t-test's p-value (scipy).
"""

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from recbole.evaluator.metrics import NDCG, Hit
from scipy import stats

from benchmarks.store import LOADED_REVISION, Run, load_variants, scorer
from recbole_recgpt.comparison.store import record_path, settings_differ
from recbole_recgpt.record import RunRecord


def per_user_metrics(trainer, eval_data):
    """``(user ids, {metric: per-user values})`` of one evaluation, in the loader's order."""
    users, structs = [], []
    collect, evaluate = trainer.eval_collector.eval_batch_collect, trainer.evaluator.evaluate

    def collect_users(scores, interaction, positive_u, positive_i):
        users.append(interaction[trainer.config["USER_ID_FIELD"]].cpu())
        return collect(scores, interaction, positive_u, positive_i)

    def keep_struct(struct):
        structs.append(struct)
        return evaluate(struct)

    trainer.eval_collector.eval_batch_collect, trainer.evaluator.evaluate = collect_users, keep_struct
    try:
        trainer.evaluate(eval_data, load_best_model=False)
    finally:
        trainer.eval_collector.eval_batch_collect, trainer.evaluator.evaluate = collect, evaluate
    ndcg, hit = NDCG(trainer.config), Hit(trainer.config)
    pos_index, pos_len = ndcg.used_info(structs[0])
    values = {"ndcg@10": ndcg.metric_info(pos_index, pos_len)[:, 9], "hit@10": hit.metric_info(pos_index)[:, 9]}
    return torch.cat(users).numpy(), values


def current_record(store, dataset, variant, variants, seed, shared):
    """``(record, config)`` of a stored run whose record was made with today's settings."""
    spec = variants[variant]
    record = RunRecord.read(record_path(store, dataset, variant, seed))
    if record is None:
        raise SystemExit(f"error: no record of {variant} on {dataset}, seed {seed}, in {store}; run the campaign first")
    run = Run(store, dataset, variant, spec, seed, shared)
    if "start_from" in spec:
        parent = RunRecord.read(record_path(store, dataset, spec["parent"], seed))
        if parent is None:
            raise SystemExit(f"error: no record of {spec['parent']} (the parent of {variant}) on {dataset}, seed {seed}, in {store}")
        run.start_from(parent)
    config = run.config(record.model)
    changed = settings_differ(record.config, config, run.config_files)
    if changed:
        raise SystemExit(f"error: {variant} seed {seed}: its record was made with other settings ({', '.join(changed)}); rerun the campaign")
    return record, config


def check_means(values, stored, what):
    """Each per-user metric's mean is the stored one (``what`` names the run and split)."""
    for name, per_user in values.items():
        if abs(per_user.mean() - stored[name]) > 1e-4:
            raise SystemExit(
                f"error: {what}: per-user {name} {per_user.mean():.4f} is not the stored {stored[name]:.4f}; "
                "the checkpoint or the data changed"
            )


def score_stored_run(store, dataset, variant, variants, seed, shared, split="test"):
    """``(user ids, {metric: per-user values}, loader)`` of a stored run's checkpoint scored
    again on the ``split`` (``test`` or ``valid``) users, checked against its record."""
    record, config = current_record(store, dataset, variant, variants, seed, shared)
    if not record.checkpoint or not Path(record.checkpoint).is_file():
        raise SystemExit(f"error: {variant} seed {seed}: checkpoint {record.checkpoint} is gone; rerun the variant")
    trainer, valid_data, test_data = scorer(config, record.checkpoint)
    eval_data, stored = (test_data, record.test_result) if split == "test" else (valid_data, record.best_valid_result)
    users, values = per_user_metrics(trainer, eval_data)
    check_means(values, stored, f"{variant} seed {seed}: rescored {split}")
    order = np.argsort(users)
    return users[order], {name: per_user[order] for name, per_user in values.items()}, eval_data


def per_user_test_metrics(store, dataset, variant, variants, seed, shared):
    """``(user ids, {metric: per-user values})`` of a stored run's test users in id order:
    from its record's hit ranks, or (a record without them) its checkpoint scored again."""
    record, _ = current_record(store, dataset, variant, variants, seed, shared)
    stored = record.per_user_test(10)
    if stored is None:
        users, values, _ = score_stored_run(store, dataset, variant, variants, seed, shared)
        return users, values
    users, values = stored
    check_means(values, record.test_result, f"{variant} seed {seed}: test")
    return users, values


def paired(first, second, resamples=10000):
    """Mean of ``first - second``, its 95% paired bootstrap interval, the paired t-test's p."""
    difference = first - second
    interval = stats.bootstrap(
        (difference,), np.mean, n_resamples=resamples, confidence_level=0.95, method="percentile",
        batch=500, random_state=np.random.default_rng(0),
    ).confidence_interval
    return difference.mean(), interval.low, interval.high, stats.ttest_rel(first, second).pvalue


def report(dataset, names, seeds, scored):
    """Markdown: one row per seed and metric, then the seed-averaged per-user difference."""
    first, second = names
    lines = [
        f"## {dataset}: {first} vs {second}, test users paired",
        "",
        f"| seed | metric | {first} | {second} | difference | 95% bootstrap interval | paired t-test p |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for metric in scored[first][seeds[0]]:
        rows = [(seed, scored[first][seed][metric], scored[second][seed][metric]) for seed in seeds]
        if len(seeds) > 1:
            rows.append(("mean of seeds", np.mean([a for _, a, _ in rows], axis=0), np.mean([b for _, _, b in rows], axis=0)))
        for seed, a, b in rows:
            mean, low, high, p = paired(a, b)
            lines.append(f"| {seed} | {metric} | {a.mean():.4f} | {b.mean():.4f} | {mean:+.4f} | [{low:+.4f}, {high:+.4f}] | {p:.3g} |")
    return "\n".join(lines) + "\n"


def rescoring_parser(description, variants_help):
    """The command line of a script that scores stored runs again: dataset, variants, store, output."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--variants", required=True, help=variants_help)
    parser.add_argument("--seeds", default="2020")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--store", default="results/runs")
    parser.add_argument("--variants_file", default=None)
    parser.add_argument("--out", default=None, help="also write the markdown here")
    return parser


def publish(text, script, argv, out):
    """Print ``text`` with the command and revision that made it, and write it to ``out``."""
    command = shlex.join(["python", "-m", script, *(sys.argv[1:] if argv is None else argv)])
    text += f"\nMade by `{command}` at git {LOADED_REVISION}.\n"
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)


def main(argv=None):
    parser = rescoring_parser(__doc__, "two stored variants, first,second")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    variants = load_variants(args.variants_file) if args.variants_file else load_variants()
    if len(names) != 2 or any(name not in variants for name in names):
        parser.error(f"--variants takes two known variants, first,second (got {args.variants!r})")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    shared = {"data_path": args.data_path} if args.data_path else {}
    scored = {name: {} for name in names}
    for seed in seeds:
        users = []
        for name in names:
            user_ids, scored[name][seed] = per_user_test_metrics(args.store, args.dataset, name, variants, seed, shared)
            users.append(user_ids)
        if not np.array_equal(*users):
            raise SystemExit(f"error: seed {seed}: the two runs were tested on different users; same dataset settings needed")
    publish(report(args.dataset, names, seeds, scored), "benchmarks.significance", argv, args.out)


if __name__ == "__main__":
    main()
