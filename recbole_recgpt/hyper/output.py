"""What a search leaves behind, all written by the driver.

For ``--output_file=out.csv``:

* ``out.csv``: one row per finished trial, rewritten (atomically) as each trial ends; a
  rerun of the same command reads it and skips the trials it holds (:class:`SearchRecord`).
* ``out.txt``: RecBole's ``HyperTuning.export_result`` text (parameters, valid and test
  result of every completed trial).
* ``out-ranked.md``: every trial ranked by validation, failed ones last with their reason.
* ``out-best.yaml``: the best completed trial's parameters, for ``--config_files``; written
  once every planned trial has a result, so that no run takes a partial search's winner.
* ``out.png``: the validation metric per trial and per value of each parameter.
"""

import csv
import json
import os
import shlex
from pathlib import Path
from time import time

import yaml
from recbole.utils.utils import dict2str

from recbole_recgpt.files import replace_atomically, write_text_atomically
from recbole_recgpt.hyper.space import params_key, params_text, plain
from recbole_recgpt.hyper.trial import FINAL, OK, STOPPED

# Columns of the CSV besides the parameters and the valid_* / test_* metrics.
HEAD = ["trial", "status", "best_valid_score"]
# (Not "epochs": that is a parameter a search may vary.)
TAIL = ["epochs_trained", "phase_epochs", "seconds", "error", "checkpoint", "params", "valid_curve"]


def output_paths(output_file):
    """The files of a search, named after ``--output_file`` (``out.csv`` -> ``out.txt``...).
    An ``--output_file`` that does not end in ``.csv`` (RecBole's ``hyper.txt`` habit) gets
    RecBole's text, and the CSV beside it."""
    path = Path(output_file)
    stem = path.with_suffix("")
    csv_path = path if path.suffix == ".csv" else stem.with_suffix(".csv")
    text = path if path.suffix != ".csv" else stem.with_suffix(".txt")
    return {
        "csv": csv_path,
        "text": text,
        "ranked": Path(f"{stem}-ranked.md"),
        "best": Path(f"{stem}-best.yaml"),
        "plot": stem.with_suffix(".png"),
        "ray": Path(f"{stem}-ray"),  # Ray's folders of the trials (logs, checkpoints)
    }


class SearchRecord:
    """The finished trials of a search, kept in a CSV file.

    The file is read when the search starts and rewritten after every trial (to a temporary
    file, then renamed, so a kill never leaves half a file); ``on_add(row)`` then follows.
    """

    def __init__(self, path, parameter_names, on_add=None):
        self.path = Path(path)
        self.on_add = on_add
        self.parameter_names = list(parameter_names)
        self.rows = []
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as lines:
                self.rows = [_from_csv(line) for line in csv.DictReader(lines)]
        self.added = []  # rows recorded by this run of the search

    def finished(self, params):
        """The final row of this combination, if an earlier trial finished it."""
        key = params_key(params)
        for row in self.rows:
            if row["status"] in FINAL and params_key(row["params"]) == key:
                return row
        return None

    def add(self, row):
        """Record a trial that ended (it replaces an earlier ``error`` row of its combination)."""
        key = params_key(row["params"])
        self.rows = [old for old in self.rows if params_key(old["params"]) != key]
        row = {**row, "trial": max((old["trial"] for old in self.rows), default=0) + 1}
        self.rows.append(row)
        self.added.append(row)
        self._write()
        if self.on_add:
            self.on_add(row)
        return row

    def _write(self):
        metrics = []
        for row in self.rows:
            for prefix in ("valid", "test"):
                metrics += [f"{prefix}_{name}" for name in row[prefix] if f"{prefix}_{name}" not in metrics]
        names = self.parameter_names + [
            name for row in self.rows for name in row["params"] if name not in self.parameter_names
        ]
        columns = HEAD + list(dict.fromkeys(names)) + sorted(metrics, key=lambda m: not m.startswith("valid")) + TAIL
        with replace_atomically(self.path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, columns)
            writer.writeheader()
            writer.writerows(_to_csv(row) for row in self.rows)


def _to_csv(row):
    flat = {
        "trial": row["trial"],
        "status": row["status"],
        "best_valid_score": "" if row["best_valid_score"] is None else row["best_valid_score"],
        "epochs_trained": row["epochs"],
        "phase_epochs": " ".join(f"{name}:{epochs}" for name, epochs in row["phase_epochs"].items()),
        "seconds": row["seconds"],
        "error": row["error"] or "",
        "checkpoint": row["checkpoint"] or "",
        "params": params_key(row["params"]),
        "valid_curve": json.dumps(row["valid_curve"]),
    }
    flat.update({name: plain(value) for name, value in row["params"].items()})
    for prefix in ("valid", "test"):
        flat.update({f"{prefix}_{name}": value for name, value in row[prefix].items()})
    return flat


def _from_csv(flat):
    def metrics(prefix):
        start = f"{prefix}_"
        return {
            key[len(start):]: float(value)
            for key, value in flat.items() if key.startswith(start) and key not in TAIL and value != ""
        }

    return {
        "trial": int(flat["trial"]),
        "status": flat["status"],
        "best_valid_score": float(flat["best_valid_score"]) if flat["best_valid_score"] else None,
        "params": json.loads(flat["params"]),
        "valid": metrics("valid"),
        "test": metrics("test"),
        "epochs": int(flat["epochs_trained"]),
        "phase_epochs": {
            name: int(epochs) for name, _, epochs in (item.partition(":") for item in flat["phase_epochs"].split())
        },
        "seconds": float(flat["seconds"]),
        "checkpoint": flat["checkpoint"] or None,
        "valid_curve": json.loads(flat["valid_curve"]),
        "error": flat["error"] or None,
    }


def ranked(rows, bigger):
    """Completed trials best first on validation, then trials stopped early (by the best
    validation they reached), then failed ones."""
    order = {OK: 0, STOPPED: 1}

    def rank(row):
        group, score = order.get(row["status"], 2), row["best_valid_score"]
        if score is None:
            return group, 1, 0.0
        return group, 0, -score if bigger else score

    return sorted(rows, key=rank)


def best(rows, bigger):
    """The completed trial with the best validation score (never chosen on test), or None."""
    completed = [row for row in rows if row["status"] == OK]
    return ranked(completed, bigger)[0] if completed else None


def write_outputs(record, paths, context, plot=False, complete=True):
    """RecBole's text, the ranked table, the best yaml and (``plot``) the PNG, from the record.
    The best yaml only when the search is ``complete``; until then an older one is removed.

    ``context``: ``command``, ``git_revision``, ``seed``, ``valid_metric``, ``bigger``, ``model``,
    ``dataset``, ``fixed``, ``config_files``, ``n_trials``, ``started`` (when this run of the
    search began, ``time.time()``).
    """
    rows, bigger = record.rows, context["bigger"]
    _write_text(paths["text"], rows)
    _write_ranked(paths["ranked"], rows, context)
    winner = best(rows, bigger)
    if winner is not None and complete:
        _write_best(paths["best"], winner, context)
    elif not complete:
        paths["best"].unlink(missing_ok=True)  # the winner of fewer trials than the search plans
    if plot:
        plot_search(paths["plot"], rows, record.parameter_names, context)
    return winner


def _write_text(path, rows):
    write_text_atomically(path, "".join(
        f"{params_text(row['params'])}\nValid result:\n{dict2str(row['valid'])}\nTest result:\n{dict2str(row['test'])}\n\n"
        for row in rows if row["status"] == OK
    ))


def _header(context, rows):
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return [
        f"Command: `{context['command']}` (git {context['git_revision'][:7]}, seed {context['seed']})",
        f"Trials: {len(rows)} ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
        f"ranked by valid {context['valid_metric']} ({'higher' if context['bigger'] else 'lower'} is better). "
        f"Trial time: {sum(row['seconds'] for row in rows):.0f} s in all; this run of the search: "
        f"{time() - context['started']:.0f} s wall.",
    ]


def _write_ranked(path, rows, context):
    names = list(dict.fromkeys(name for row in rows for name in row["params"]))
    metric = context["valid_metric"].lower()
    lines = _header(context, rows) + [
        "",
        "| rank | trial | status | " + " | ".join(names) + f" | valid {metric} | test {metric} | epochs | seconds | error |",
        "| ---: | ---: | --- | " + " | ".join("---" for _ in names) + " | ---: | ---: | ---: | ---: | --- |",
    ]
    for rank, row in enumerate(ranked(rows, context["bigger"]), 1):
        score = "" if row["best_valid_score"] is None else f"{row['best_valid_score']:.4f}"
        test = f"{row['test'][metric]:.4f}" if metric in row["test"] else ""
        values = " | ".join(str(row["params"].get(name, "")) for name in names)
        lines.append(
            f"| {rank} | {row['trial']} | {row['status']} | {values} | {score} | {test} | {row['epochs']} | "
            f"{row['seconds']:.0f} | {(row['error'] or '').replace('|', '/')} |"
        )
    write_text_atomically(path, "\n".join(lines) + "\n")


def _as_given(value):
    """A path under the current directory as a relative path (the search made it absolute for
    Ray's trial folders), so that the rerun command works in another checkout; else ``value``."""
    if isinstance(value, str) and os.path.isabs(value):
        relative = os.path.relpath(value)
        if not relative.startswith(".."):
            return relative
    return value


def _write_best(path, row, context):
    metric = context["valid_metric"].lower()
    fixed = " ".join(shlex.quote(f"--{key}={_as_given(value)}") for key, value in context["fixed"].items())
    files = shlex.quote("--config_files=" + " ".join(map(_as_given, context["config_files"] + [str(path)])))
    comment = [
        f"Best of {context['n_trials']} trials of {context['model']} on {context['dataset']}: trial {row['trial']}, "
        f"valid {metric} {row['best_valid_score']:.4f} (test {metric} {row['test'].get(metric, float('nan')):.4f}).",
        f"Search: {context['command']} (git {context['git_revision'][:7]}, seed {context['seed']})",
        f"Rerun: python run_recgpt.py --model={context['model']} --dataset={context['dataset']} {files} {fixed}".rstrip(),
    ]
    body = yaml.safe_dump({name: plain(value) for name, value in row["params"].items()}, sort_keys=False)
    write_text_atomically(path, "".join(f"# {line}\n" for line in comment) + body)


def plot_search(path, rows, parameter_names, context):
    """PNG: the validation metric per trial (in the order they ended), and per value of each
    searched parameter. Trials stopped early are hollow; failed ones are not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    scored = [row for row in rows if row["best_valid_score"] is not None]
    panels = 1 + len(parameter_names)
    columns = min(panels, 3)
    lines = -(-panels // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.5 * columns, 3.5 * lines), squeeze=False)
    axes = axes.ravel()
    label = f"valid {context['valid_metric']}"

    def draw(ax, xs, subset):
        for status, face in ((OK, "C0"), (STOPPED, "none")):
            points = [(x, row["best_valid_score"]) for x, row in zip(xs, subset) if row["status"] == status]
            if points:
                ax.scatter(*zip(*points), facecolors=face, edgecolors="C0", label=status)

    draw(axes[0], [row["trial"] for row in scored], scored)
    unscored = len(rows) - len(scored)
    title = f"{context['model']} on {context['dataset']}" + (f" ({unscored} failed, not drawn)" if unscored else "")
    axes[0].set(xlabel="trial", ylabel=label, title=title)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    if scored:  # nothing drawn, nothing to label
        axes[0].legend(fontsize="small")
    for ax, name in zip(axes[1:], parameter_names):
        values = [row["params"].get(name) for row in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            draw(ax, values, scored)
            if values and min(values) > 0 and max(values) / min(values) >= 50:
                ax.set_xscale("log")
        else:  # categories (strings, booleans): one position per value
            categories = list(dict.fromkeys(str(v) for v in values))
            draw(ax, [categories.index(str(v)) for v in values], scored)
            ax.set_xticks(range(len(categories)), categories)
        ax.set(xlabel=name, ylabel=label)
    for ax in axes[panels:]:
        ax.set_visible(False)
    figure.tight_layout()
    with replace_atomically(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
