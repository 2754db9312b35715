"""Tables and chart from the result store.

    python -m benchmarks.tables      # results/runs/** -> results/comparison.{csv,md,png}, docs/results.md,
                                     # README.md's headline table and docs/experiments.md's
                                     # RecGPT-against-SASRec table

``comparison.csv`` has one row per finished run. ``comparison.md`` has, per dataset, the
main table (mean ± std over seeds, best mean per column in bold, RecGPT's relative gain over
the baseline that is best on validation), the same kind of table under the masked-history
protocol (``group: masked``), then the ablation and experiment rows; ``experiments-<dataset>.md``
lists every experiment and masked-protocol run with its command.
``comparison.png`` plots test NDCG@10 and HR@10 of the main table with std error bars;
``ablations.png`` plots them (and validation NDCG@10) against each swept parameter (``sweep`` in variants.yaml).
``docs/results.md`` opens with the headline (each ``headline`` variant against the baseline best
on validation, both protocols), then the main, masked and ablation tables.
"""

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

from scipy import stats

from benchmarks.documents import rewrite_block
from benchmarks.speed import SAMPLED_LOSSES
from benchmarks.store import load_variants
from recbole_recgpt.comparison.store import load_records
from recbole_recgpt.comparison.table import mean_and_std, mean_std_text, metric_label
from recbole_recgpt.utils import MODELS as PLUGIN_MODELS

METRICS = ("hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20")
CSV_COLUMNS = (
    "dataset", "model", "seed", "valid_ndcg@10", *METRICS, "epochs", "wall_s", "git", "command",
    "trainer", "parent", "threads",
)
GROUPS = {
    "main": "Main comparison",
    "masked": "Same checkpoints, history items masked (eval_mask_history)",
    "ablation": "Paper ablations",
    "experiment": "Controlled experiments",
}


def short_revision(record):
    """``abc1234`` or ``abc1234-dirty`` (uncommitted changes when the run was made)."""
    return (record.git or "")[:7] + ("-dirty" if record.git_dirty else "")


def csv_row(record):
    row = {
        "dataset": record.dataset, "model": record.variant, "seed": record.seed,
        "valid_ndcg@10": record.best_valid_result["ndcg@10"],
        "epochs": record.epochs, "wall_s": record.wall_s, "git": short_revision(record),
        "command": record.command, "trainer": record.trainer,
        "parent": record.derived_from or record.started_from or "",
        "threads": "" if record.threads is None else record.threads,
    }
    row.update({metric: record.test_result[metric] for metric in METRICS})
    return row


def summarise(records):
    """Per variant: n seeds, mean and std of valid NDCG@10 and every test metric."""
    columns = {"valid_ndcg@10": [r.best_valid_result["ndcg@10"] for r in records]}
    columns.update({m: [r.test_result[m] for r in records] for m in METRICS})
    spreads = {k: mean_and_std(v) for k, v in columns.items()}
    return {
        "n": len(records),
        "mean": {k: mean for k, (mean, _) in spreads.items()},
        "std": {k: std for k, (_, std) in spreads.items()},
        "epochs": ", ".join(sorted({r.epochs for r in records})),
        "wall_s": statistics.fmean(r.wall_s if r.training_wall_s is None else r.training_wall_s for r in records),
        "threads": ", ".join(sorted({"?" if r.threads is None else str(r.threads) for r in records})),
        "trainer": records[0].trainer,
        "dirty": any(r.git_dirty for r in records),
        "by_seed": {r.seed: {k: columns[k][i] for k in columns} for i, r in enumerate(records)},
    }


DIRTY_MARK = "†"
DIRTY_NOTE = (
    f"{DIRTY_MARK}: some of the row's runs were made at a revision with uncommitted changes to the code, yaml "
    "or data (their records' `git` ends in `-dirty`); kept, not retrained."
)


def row_name(name, summary):
    return f"{name} {DIRTY_MARK}" if summary["dirty"] else name


def cell(summary, column, best):
    return mean_std_text(summary["mean"][column], summary["std"][column], summary["n"], best)


def by_variant(records, order):
    grouped = {}
    for record in records:
        grouped.setdefault(record.variant, []).append(record)
    known = [name for name in order if name in grouped]
    return {name: grouped[name] for name in known + sorted(set(grouped) - set(known))}


def main_table(dataset, summaries, variants):
    columns = ("valid_ndcg@10", *METRICS)
    header = ["model", "trainer", "seeds", "valid NDCG@10", *(metric_label(m) for m in METRICS), "epochs", "wall s", "threads"]
    best = {c: max(s["mean"][c] for s in summaries.values()) for c in columns}
    lines = ["| " + " | ".join(header) + " |", "| --- | --- | ---: | " + " | ".join("---:" for _ in header[3:]) + " |"]
    for name, s in summaries.items():
        cells = [cell(s, c, s["mean"][c] == best[c]) for c in columns]
        lines.append(
            f"| {row_name(name, s)} | {s['trainer']} | {s['n']} | " + " | ".join(cells) + f" | {s['epochs']} | {s['wall_s']:.0f} | {s['threads']} |"
        )
    lines += ["", *gain_lines(summaries, variants)]
    return lines


def model_of(name, variants):
    spec = variants.get(name, {})
    return spec.get("model") or variants.get(spec.get("parent"), {}).get("model")


def is_baseline(name, variants):
    """Whether a variant is of a RecBole model (not of a model of this plugin's registry)."""
    return model_of(name, variants) not in (None, *PLUGIN_MODELS)


def gain_lines(summaries, variants):
    """Each RecGPT row's relative gain over the baseline that is best on validation NDCG@10
    (a derived row is of its parent's model), on the seeds both rows have."""
    baselines = {n: s for n, s in summaries.items() if is_baseline(n, variants)}
    ours = [n for n in summaries if model_of(n, variants) in PLUGIN_MODELS]
    if not ours or not baselines:
        return ["RecGPT's gain: needs a trained RecGPT row and a baseline row."]
    best = max(baselines, key=lambda n: baselines[n]["mean"]["valid_ndcg@10"])
    lines = []
    for name in ours:
        mine, theirs = summaries[name]["by_seed"], baselines[best]["by_seed"]
        seeds = sorted(set(mine) & set(theirs))
        if not seeds:
            lines.append(f"- {name} vs the best baseline on validation ({best}): no seed in common.")
            continue
        parts = []
        for metric, label in (("valid_ndcg@10", "valid NDCG@10"), ("ndcg@10", "test NDCG@10"), ("hit@10", "test HR@10")):
            ratio = statistics.fmean(mine[s][metric] for s in seeds) / statistics.fmean(theirs[s][metric] for s in seeds)
            parts.append(f"{label} {100 * (ratio - 1):+.1f}%")
        which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
        lines.append(f"- {name} vs the best baseline on validation ({best}), {which}: " + ", ".join(parts) + ".")
    return lines


def detail_table(summaries, variants):
    lines = [
        "| variant | what changed | seeds | valid NDCG@10 | test NDCG@10 | test HR@10 | epochs | wall s | threads |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in summaries.items():
        what = variants.get(name, {}).get("description", "")
        lines.append(
            f"| {row_name(name, s)} | {what} | {s['n']} | {cell(s, 'valid_ndcg@10', False)} | {cell(s, 'ndcg@10', False)} | "
            f"{cell(s, 'hit@10', False)} | {s['epochs']} | {s['wall_s']:.0f} | {s['threads']} |"
        )
    return lines


def same_seeds(records, seeds):
    """The records of ``seeds`` only: an ablation is compared with its reference run of the
    same seed, not with the reference's mean over seeds the ablation never ran."""
    return [r for r in records if r.seed in seeds]


def dataset_sections(records, variants, groups, level):
    """Per dataset, one table per group that has rows, under headings of ``level``."""
    lines = []
    for dataset in sorted({r.dataset for r in records}):
        rows = by_variant([r for r in records if r.dataset == dataset], list(variants))
        for group in groups:
            names = [n for n in rows if variants.get(n, {}).get("group", "experiment") == group]
            if not names:
                continue
            members = {n: rows[n] for n in names}
            if group == "ablation":  # each ablation's reference run first
                parents = [variants[n]["parent"] for n in names if "parent" in variants[n]]
                seeds = {r.seed for n in names for r in rows[n]}
                references = {p: same_seeds(rows[p], seeds) for p in dict.fromkeys(parents) if p in rows and p not in names}
                members = {**{p: r for p, r in references.items() if r}, **members}
            members = {n: summarise(r) for n, r in members.items()}
            lines += ["", f"{'#' * level} {dataset}: {GROUPS[group]}", ""]
            lines += main_table(dataset, members, variants) if group in ("main", "masked") else detail_table(members, variants)
    return lines


PROVENANCE = (
    "Mean ± std over seeds; bold = best mean in the column. Every run trained to early stopping on "
    "validation NDCG@10 (patience 10 validations, at most 200 epochs a phase), except the experiment rows "
    "whose description names a fixed number of epochs; anything chosen was chosen on validation."
)


def markdown(records, variants):
    lines = [
        "# RecGPT and RecBole baselines: test set, full ranking, leave-one-out",
        "",
        "Built by `python -m benchmarks.tables` from `results/runs/` (one JSON per run: command, seed, git "
        "revision, resolved config). " + PROVENANCE + " " + DIRTY_NOTE,
    ]
    return "\n".join(lines + dataset_sections(records, variants, GROUPS, 2)) + "\n"


def headline_rows(records, variants):
    """Per dataset and protocol (``main``, ``masked``): the baseline best on validation NDCG@10
    against each variant marked ``headline`` in the variants file, on the seeds both have."""
    rows = []
    for dataset in sorted({r.dataset for r in records}):
        for group in ("main", "masked"):
            runs = by_variant(
                [r for r in records if r.dataset == dataset and variants.get(r.variant, {}).get("group") == group],
                list(variants),
            )
            baselines = {n: summarise(r) for n, r in runs.items() if is_baseline(n, variants)}
            if not baselines:
                continue
            best = max(baselines, key=lambda n: baselines[n]["mean"]["valid_ndcg@10"])
            for name in (n for n in runs if variants[n].get("headline")):
                seeds = sorted({r.seed for r in runs[name]} & {r.seed for r in runs[best]})
                if seeds:
                    ours, theirs = summarise(same_seeds(runs[name], seeds)), summarise(same_seeds(runs[best], seeds))
                    rows.append((dataset, group, variants[name]["headline"], best, seeds, ours, theirs))
    return rows


def paired_over_seeds(ours, theirs, metric="ndcg@10"):
    """``(mean, interval)``: the mean over seeds of the per-seed difference ``ours - theirs``
    and its 95% t-interval over those seeds (None with one seed). Both runs of a seed share
    the seed's data order and initial draws, so the difference varies less than either score."""
    differences = [ours["by_seed"][seed][metric] - theirs["by_seed"][seed][metric] for seed in sorted(ours["by_seed"])]
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, None
    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, (mean - half, mean + half)


def difference_cell(mean, interval):
    if interval is None:
        return f"{mean:+.4f} (one seed)"
    return f"{mean:+.4f} [{interval[0]:+.4f}, {interval[1]:+.4f}]"


def headline_table(records, variants):
    """The results at a glance: RecGPT vs the best baseline on validation, per dataset and protocol."""
    lines = [
        "| dataset | history items | model | seeds | valid NDCG@10 | test NDCG@10 | test HR@10 | best baseline on validation "
        "| its test NDCG@10 | test NDCG@10 vs it | difference, 95% interval over seeds |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for dataset, group, label, best, seeds, ours, theirs in headline_rows(records, variants):
        gain = 100 * (ours["mean"]["ndcg@10"] / theirs["mean"]["ndcg@10"] - 1)
        lines.append(
            f"| {dataset} | {'masked' if group == 'masked' else 'ranked'} | {label} | {len(seeds)} | "
            f"{cell(ours, 'valid_ndcg@10', False)} | {cell(ours, 'ndcg@10', False)} | {cell(ours, 'hit@10', False)} | "
            f"{variants[best].get('parent', best)} | {cell(theirs, 'ndcg@10', False)} | {gain:+.1f}% | "
            f"{difference_cell(*paired_over_seeds(ours, theirs))} |"
        )
    return lines


# RecGPT against SASRec, per protocol: (protocol, RecGPT's row, SASRec's row, RecGPT's phase-1 row).
AGAINST_SASREC = (
    ("RecBole's protocol", "RecGPT", "SASRec", "RecGPT-pretrain-only"),
    ("history masked", "RecGPT-masked", "SASRec-masked", "RecGPT-pretrain-only-masked"),
)
# Where that table goes in docs/experiments.md.
AGAINST_SASREC_START = "<!-- RecGPT against SASRec: python -m benchmarks.tables -->"
AGAINST_SASREC_END = "<!-- end of RecGPT against SASRec -->"


def against_sasrec_table(records, dataset_order=("amazon-beauty", "amazon-toys", "amazon-sports", "yelp")):
    """RecGPT's defaults against SASRec's, per dataset and protocol, on the seeds both have:
    the relative difference of the means, and what phase 2 (prompt-tuning and two-stage
    recall) adds to RecGPT's own phase-1 checkpoint in validation NDCG@10."""
    lines = [
        "| dataset | protocol | seeds | valid NDCG@10 | test NDCG@10 | test HR@10 | phase 2 over phase 1, valid NDCG@10 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    datasets = {r.dataset for r in records}
    for dataset in [d for d in dataset_order if d in datasets] + sorted(datasets - set(dataset_order)):
        runs = by_variant([r for r in records if r.dataset == dataset], [])
        for protocol, ours, theirs, phase1 in AGAINST_SASREC:
            seeds = sorted({r.seed for r in runs.get(ours, [])} & {r.seed for r in runs.get(theirs, [])})
            if not seeds:
                continue
            mine, base = (summarise(same_seeds(runs[name], seeds))["mean"] for name in (ours, theirs))
            gains = [f"{100 * (mine[m] / base[m] - 1):+.1f}%" for m in ("valid_ndcg@10", "ndcg@10", "hit@10")]
            valid = {name: {r.seed: r.best_valid_result["ndcg@10"] for r in runs.get(name, [])} for name in (ours, phase1)}
            phase1_seeds = sorted(set(seeds) & set(valid[phase1]))
            phase2 = ""
            if phase1_seeds:
                added = statistics.fmean(valid[ours][s] - valid[phase1][s] for s in phase1_seeds)
                phase2 = f"{added:+.4f}" + ("" if phase1_seeds == seeds else f" (seeds {', '.join(map(str, phase1_seeds))})")
            lines.append(f"| {dataset} | {protocol} | {len(seeds)} | {' | '.join(gains)} | {phase2} |")
    return lines


def epoch_seconds(records):
    """Mean training seconds per epoch over ``records`` (all phases, validation not counted)."""
    return statistics.fmean(
        sum(phase["train_seconds"] for phase in r.phases.values()) / sum(phase["epochs"] for phase in r.phases.values())
        for r in records
    )


# The epochs of results/speed.json, measured in one process, that weigh a loss's speed against
# full CE's: the records' wall seconds come from different sessions, and on this machine the
# same code's epoch took severalfold longer in one session than in another. speed.json times
# each loss with its campaign rows' settings.
SPEED_EPOCHS = {
    **{("SASRec", loss): ((f"sasrec_whole_sequence_epoch_{loss}",), ("sasrec_whole_sequence_epoch",))
       for loss in SAMPLED_LOSSES},
    **{("RecGPT", loss): ((f"recgpt_pretrain_epoch_{loss}", f"recgpt_prompt_tuning_epoch_{loss}"),
                          ("recgpt_pretrain_epoch", "recgpt_prompt_tuning_epoch"))
       for loss in SAMPLED_LOSSES},
}


def in_process_ratio(variant, speed):
    """A loss variant's epoch seconds over full CE's as measured in one process (``speed``: a
    ``results/speed.json`` report; both phases summed for RecGPT), or None where it has none."""
    overrides = variant.get("overrides", {})
    keys = SPEED_EPOCHS.get((variant.get("model"), overrides.get("baseline_loss") or overrides.get("finetune_loss")))
    measured = (speed or {}).get("measurements", {})
    if keys is None or not all(key in measured for key in (*keys[0], *keys[1])):
        return None
    return sum(measured[key]["seconds"] for key in keys[0]) / sum(measured[key]["seconds"] for key in keys[1])


def loss_rows(records, variants, speed=None):
    """Per dataset, each sampled-loss row (``loss_vs`` in the variants file) against its full-CE
    row on the seeds both have: ``(dataset, name, ce_name, seeds, summary, ce_summary, seconds,
    ce_seconds, ratio, verdict)``.

    The rule, on validation only: a loss may replace full CE where its mean validation NDCG@10
    is at least CE's mean minus one CE seed standard deviation, and its epochs are faster: in one
    process (``ratio``, from ``speed``) where measured so, else by the records' mean epoch seconds.
    Accuracy needs two seeds or more; a loss slower in one process is kept out at any count.
    """
    rows = []
    for dataset in sorted({r.dataset for r in records}):
        runs = by_variant([r for r in records if r.dataset == dataset], list(variants))
        for name in (n for n in runs if variants.get(n, {}).get("loss_vs") in runs):
            ce_name = variants[name]["loss_vs"]
            seeds = sorted({r.seed for r in runs[name]} & {r.seed for r in runs[ce_name]})
            if not seeds:
                continue
            ours, ce = same_seeds(runs[name], seeds), same_seeds(runs[ce_name], seeds)
            mine, theirs = summarise(ours), summarise(ce)
            floor = theirs["mean"]["valid_ndcg@10"] - (theirs["std"]["valid_ndcg@10"] or 0.0)
            level = mine["mean"]["valid_ndcg@10"] >= floor
            seconds, ce_seconds = epoch_seconds(ours), epoch_seconds(ce)
            ratio = in_process_ratio(variants[name], speed)
            faster = ratio < 1 if ratio is not None else seconds < ce_seconds
            if ratio is not None and not faster:
                verdict = "keep full CE: slower in one process"  # a time that does not wait on seeds
            elif len(seeds) < 2:
                verdict = "one seed: no decision"
            elif level and faster:
                verdict = "level on validation and faster: may replace full CE"
            else:
                verdict = "keep full CE: " + ("slower" if level else "below CE by more than one seed std")
            rows.append((dataset, name, ce_name, seeds, mine, theirs, seconds, ce_seconds, ratio, verdict))
    return rows


def loss_table(records, variants, speed=None):
    """Which loss: each sampled-loss row against full CE (:func:`loss_rows`)."""
    lines = [
        "| dataset | row | against | seeds | valid NDCG@10 | full CE's | s per epoch | full CE's | in one process | "
        "test NDCG@10 | full CE's | verdict |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for dataset, name, ce_name, seeds, mine, theirs, seconds, ce_seconds, ratio, verdict in loss_rows(records, variants, speed):
        lines.append(
            f"| {dataset} | {name} | {ce_name} | {len(seeds)} | {cell(mine, 'valid_ndcg@10', False)} | "
            f"{cell(theirs, 'valid_ndcg@10', False)} | {seconds:.1f} | {ce_seconds:.1f} | "
            f"{'' if ratio is None else f'{ratio:.2f} x'} | {cell(mine, 'ndcg@10', False)} | "
            f"{cell(theirs, 'ndcg@10', False)} | {verdict} |"
        )
    return lines


def tuning_table(variants):
    """What was searched for each main row's settings, and on what (the variants' ``tuned``)."""
    lines = ["| row | what was searched, and on what |", "| --- | --- |"]
    lines += [f"| {name} | {spec['tuned']} |" for name, spec in variants.items() if spec.get("tuned")]
    return lines


def search_tables(variants):
    """Each main row's search (the variant's ``search``: a run_hyper.py CSV): its trials ranked
    by validation NDCG@10, stopped and failed ones after the completed, with what it cost."""
    lines = []
    for name, spec in variants.items():
        if not spec.get("search"):
            continue
        path = Path(spec["search"])
        lines += ["", f"#### {name}: `{path}`", ""]
        if not path.exists():
            lines.append("Not run yet.")
            continue
        with open(path, newline="") as rows_file:
            rows = list(csv.DictReader(rows_file))
        command = Path(f"{path.with_suffix('')}-ranked.md")
        if command.exists():
            lines += [command.read_text().splitlines()[0], ""]
        winner = Path(f"{path.with_suffix('')}-best.yaml")  # written when every trial has a result
        if not winner.exists():
            lines += [f"In progress: {len(rows)} trial(s) so far; the row waits for the search to finish.", ""]
        parameters = list(json.loads(rows[0]["params"])) if rows else []
        order = {"ok": 0, "stopped": 1}
        rows.sort(key=lambda row: (order.get(row["status"], 2), -float(row["best_valid_score"] or "-inf")))
        lines += [
            "| rank | " + " | ".join(parameters) + " | status | valid NDCG@10 | epochs | seconds |",
            "| ---: | " + " | ".join("---" for _ in parameters) + " | --- | ---: | ---: | ---: |",
        ]
        for rank, row in enumerate(rows, 1):
            values = json.loads(row["params"])
            lines.append(
                f"| {rank} | " + " | ".join(str(values.get(key, "")) for key in parameters)
                + f" | {row['status']} | {row['best_valid_score'] or ''} | {row['epochs_trained']} | {float(row['seconds'] or 0):.0f} |"
            )
    return lines


def results_document(records, variants, speed=None):
    """docs/results.md: the headline table, the charts, then every dataset's main, masked and
    ablation tables."""
    lines = [
        "# Results",
        "",
        "Every number here is generated by `python -m benchmarks.tables` from the run records in "
        "`results/runs/` (one JSON per run with its command, seed, git revision, threads, resolved "
        "config and wall time; all runs on a 2-core CPU machine). " + PROVENANCE + " How the runs are "
        "made: [benchmarks.md](benchmarks.md); the protocol: [protocol.md](protocol.md); what the "
        "numbers mean: [experiments.md](experiments.md). " + DIRTY_NOTE,
        "",
        "## At a glance",
        "",
        "RecGPT (this project's defaults, `properties/model/RecGPT.yaml`) and RecGPT-paper (the paper's "
        "configuration) against the baseline that is best on validation NDCG@10, on the seeds both have. "
        "*ranked*: items of the user's history stay in the ranking (RecBole's sequential protocol); "
        "*masked*: they are never ranked (`eval_mask_history: True`, the reference code's protocol), "
        "scored from the same checkpoints. The last column pairs the two models seed by seed (test "
        "NDCG@10, RecGPT minus the baseline; Student's t over the seeds); paired per-user tests: the "
        "`results/significance-*.md` files.",
        "",
        *headline_table(records, variants),
        "",
        "### What was tuned",
        "",
        "Every choice was made on validation; none of these settings was searched on test.",
        "",
        *tuning_table(variants),
        "",
        "### The searches",
        "",
        "The trials of each search behind a main row, on validation only (*stopped*: ended early by "
        "ASHA against the others' curves; *failed*: the settings cannot run, with the reason in the "
        "search's `-ranked.md`).",
        *search_tables(variants),
        "",
        "### Which loss",
        "",
        "Sampled softmax and gBCE (`recbole_recgpt/model/losses.py`) against full-softmax CE, the same "
        "model and settings otherwise, on the seeds both have. The rule, on validation alone: a loss may "
        "replace full CE where its mean validation NDCG@10 is at least full CE's mean minus one seed "
        "standard deviation and its training epochs (all phases, validation not counted) are faster; "
        "test columns are shown, never used. Faster is read from the epochs timed in one process "
        "(*in one process*: the loss's epoch time over full CE's, `results/speed.json`) where they were, "
        "since the records' seconds per epoch come from different sessions, whose wall times differ "
        "severalfold on this machine. Accuracy needs two seeds or more; a loss slower in one process "
        "is kept out at any number of seeds.",
        "",
        *(loss_table(records, variants, speed) if loss_rows(records, variants, speed) else ["No sampled-loss runs yet."]),
        "",
        "![test NDCG@10 and HR@10 of the main rows](../results/comparison.png)",
        "",
        "Every run, one row each: [`results/comparison.csv`](../results/comparison.csv); every table, "
        "experiments included: [`results/comparison.md`](../results/comparison.md).",
    ]
    lines += dataset_sections(records, variants, ("main", "masked", "ablation"), 2)
    lines += ["", "![the ablations](../results/ablations.png)"]
    return "\n".join(lines) + "\n"


def chart(records, variants, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in records if variants.get(r.variant, {}).get("group") == "main"]
    if not main:
        return
    datasets = sorted({r.dataset for r in main})
    names = [n for n in variants if any(r.variant == n for r in main)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    width = 0.8 / len(names)
    for ax, metric in zip(axes, ("ndcg@10", "hit@10")):
        for i, name in enumerate(names):
            # A row not run yet gets no bar (a zero-height bar would read as a score of 0).
            xs, means, stds = [], [], []
            for d, dataset in enumerate(datasets):
                values = [r.test_result[metric] for r in main if r.dataset == dataset and r.variant == name]
                if values:
                    xs.append(d + i * width)
                    means.append(statistics.fmean(values))
                    stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            ax.bar(xs, means, width, color=f"C{i % 10}", label=name)
            seeded = [j for j, std in enumerate(stds) if std > 0]  # one seed: no error bar
            ax.errorbar([xs[j] for j in seeded], [means[j] for j in seeded], yerr=[stds[j] for j in seeded],
                        fmt="none", ecolor="black", capsize=2)
        ax.set_xticks([d + 0.4 - width / 2 for d in range(len(datasets))], datasets)
        ax.set_title(f"test {metric.upper().replace('HIT', 'HR')} (mean ± std over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(names), 5), fontsize=8)
    fig.text(0.5, 0.955, "no bar: not run yet", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_panels(records, variants):
    """Per swept parameter and dataset, ``(title, [(value, [results of each run]), ...])``; the
    parent run is one point, at the seeds the swept runs have."""
    sweeps = {}
    for name, spec in variants.items():
        if "sweep" in spec:
            sweeps.setdefault((spec["sweep"], spec["parent"]), []).append(name)
    panels = []
    for (parameter, parent), names in sweeps.items():
        for dataset in sorted({r.dataset for r in records}):
            swept = [r for r in records if r.dataset == dataset and r.variant in names]
            reference = [r for r in records if r.dataset == dataset and r.variant == parent]
            points = {}
            for record in swept + same_seeds(reference, {r.seed for r in swept}):
                results = {**record.test_result, "valid ndcg@10": record.best_valid_result["ndcg@10"]}
                points.setdefault(record.config[parameter], []).append(results)
            if len(points) > 1:
                seeds = sorted({r.seed for r in swept})
                which = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                panels.append((f"{dataset}: {parameter} ({parent}), {which}", sorted(points.items())))
    return panels


def sweep_chart(records, variants, path):
    """Test NDCG@10 and HR@10, and validation NDCG@10, against each swept parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sweep_panels(records, variants)
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels):
        x = [value for value, _ in points]
        for metric, label, style in (("ndcg@10", "test NDCG@10", "-"), ("hit@10", "test HR@10", "-"),
                                     ("valid ndcg@10", "valid NDCG@10", "--")):
            ax.plot(x, [statistics.fmean(r[metric] for r in results) for _, results in points], style, marker="o",
                    label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def experiments_markdown(dataset, records, variants):
    """Every run of the controlled experiments and of the masked protocol on one dataset,
    one row each, with the command that reproduces it."""
    lines = [
        f"# Controlled experiments on {dataset}",
        "",
        "Built by `python -m benchmarks.tables` from `results/runs/`. One row per run; chosen on "
        "validation only. A row with a parent was trained from (phase 2 only) or scored from "
        "(derived, nothing trained) that run's checkpoint.",
        "",
        "| variant | what changed | parent | seed | valid NDCG@10 | test NDCG@10 | test HR@10 | epochs | wall s | git | command |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for record in records:
        spec = variants.get(record.variant, {})
        if record.dataset != dataset or spec.get("group") not in ("experiment", "masked"):
            continue
        command = record.campaign_command or record.command
        lines.append(
            f"| {record.variant} | {spec.get('description', '')} | {spec.get('parent', '')} | {record.seed} | "
            f"{record.best_valid_result['ndcg@10']:.4f} | {record.test_result['ndcg@10']:.4f} | "
            f"{record.test_result['hit@10']:.4f} | {record.epochs} | {record.wall_s:.0f} | "
            f"{short_revision(record)} | `{command}` |"
        )
    return "\n".join(lines) + "\n"


README_START = "<!-- headline: python -m benchmarks.tables -->"
README_END = "<!-- end of headline -->"


def update_readme(path, records, variants):
    """Rewrite the headline table between :data:`README_START` and :data:`README_END` in
    ``path``; the rest of the file is left as it is."""
    rewrite_block(path, README_START, README_END, headline_table(records, variants))


def build_tables(store="results/runs", out="results", variants=None, document=None, readme=None, experiments=None):
    variants = variants or load_variants()
    records = load_records(store)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "comparison.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_row(r) for r in records)
    (out / "comparison.md").write_text(markdown(records, variants))
    for dataset in sorted({r.dataset for r in records}):
        (out / f"experiments-{dataset}.md").write_text(experiments_markdown(dataset, records, variants))
    chart(records, variants, out / "comparison.png")
    sweep_chart(records, variants, out / "ablations.png")
    if document:
        speed_report = out / "speed.json"
        speed = json.loads(speed_report.read_text()) if speed_report.exists() else None
        Path(document).write_text(results_document(records, variants, speed))
    if readme:
        update_readme(readme, records, variants)
    if experiments:
        rewrite_block(experiments, AGAINST_SASREC_START, AGAINST_SASREC_END, against_sasrec_table(records))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="results/runs")
    parser.add_argument("--out", default="results")
    parser.add_argument("--document", default="docs/results.md", help="the results document (headline and tables)")
    parser.add_argument("--readme", default="README.md", help="the file whose headline table is rewritten")
    parser.add_argument("--experiments", default="docs/experiments.md",
                        help="the file whose RecGPT-against-SASRec table is rewritten")
    args = parser.parse_args(argv)
    build_tables(args.store, args.out, document=args.document, readme=args.readme, experiments=args.experiments)


if __name__ == "__main__":
    main()
