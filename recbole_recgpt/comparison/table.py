"""One dataset's comparison: per model, mean ± std over seeds of the best-valid and test
metrics, and the model chosen on validation, as ``comparison.csv``, ``.md`` and ``.png``.

The chosen model is the one whose mean best-valid ``valid_metric`` (the metric every run
was selected on, NDCG@10 by default) is best; test metrics play no part in the choice.
"""

import csv
import io
import statistics
from pathlib import Path

from recbole_recgpt.files import replace_atomically, write_text_atomically

CHOSEN_MARK = "✓"


def mean_and_std(values):
    """``(mean, sample std)`` of ``values``; the std of one value is 0."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std_text(mean, std, n, bold=False):
    """``0.1234 ± 0.0056`` (the ± part only over several seeds), in bold when asked."""
    text = f"{mean:.4f}"
    if n > 1:
        text += f" ± {std:.4f}"
    return f"**{text}**" if bold else text


def metric_label(metric):
    """``ndcg@10`` -> ``NDCG@10``, ``hit@10`` -> ``HR@10``."""
    return metric.upper().replace("HIT", "HR")


def metrics_of(records):
    """The test metrics every record has, in the first record's order (RecBole's)."""
    return [m for m in records[0].test_result if all(m in r.test_result and m in r.best_valid_result for r in records)]


class Comparison:
    """The records of one dataset's comparison, summarised per model (``name``: the record's
    ``variant``, else its ``model``), models in the order first seen."""

    def __init__(self, records):
        if not records:
            raise ValueError("a comparison needs at least one finished run")
        self.dataset = records[0].dataset
        self.metrics = metrics_of(records)
        config = records[0].config
        self.valid_metric = config["valid_metric"].lower()
        self.bigger = config.get("valid_metric_bigger", True)
        self.runs = {}
        for record in records:
            self.runs.setdefault(record.variant or record.model, []).append(record)

    def summary(self, name):
        """``{column: (mean, std)}`` over the model's seeds: ``valid_<metric>`` and ``test_<metric>``."""
        records = self.runs[name]
        summary = {}
        for split, results in (("valid", [r.best_valid_result for r in records]), ("test", [r.test_result for r in records])):
            for metric in self.metrics:
                summary[f"{split}_{metric}"] = mean_and_std([result[metric] for result in results])
        return summary

    @property
    def chosen(self):
        """The model with the best mean validation score: the one to pick."""
        column = f"valid_{self.valid_metric}"
        pick = max if self.bigger else min
        return pick(self.runs, key=lambda name: self.summary(name)[column][0])

    def rows(self):
        """One dict per model: the CSV's columns (:meth:`columns`)."""
        rows = []
        for name, records in self.runs.items():
            row = {"model": name, "trainer": records[0].trainer, "seeds": len(records),
                   "chosen_on_validation": name == self.chosen}
            for column, (mean, std) in self.summary(name).items():
                # RecBole rounds every metric to 4 digits; 6 keep the mean of a few seeds exact.
                row[column], row[f"{column}_std"] = round(mean, 6), round(std, 6)
            row["epochs"] = " ".join(r.epochs for r in records)
            row["wall_s"] = round(statistics.fmean(r.wall_s or 0.0 for r in records), 1)
            rows.append(row)
        return rows

    def columns(self):
        columns = ["model", "trainer", "seeds", "chosen_on_validation"]
        for split in ("valid", "test"):
            for metric in self.metrics:
                columns += [f"{split}_{metric}", f"{split}_{metric}_std"]
        return columns + ["epochs", "wall_s"]

    def csv(self):
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        return text.getvalue()

    def markdown(self, command=None):
        """The validation score every run was selected on, then each test metric, mean ± std
        over seeds, the best mean of each column in bold and the chosen model marked."""
        columns = [f"valid_{self.valid_metric}", *(f"test_{m}" for m in self.metrics)]
        header = ["model", "trainer", "seeds", f"valid {metric_label(self.valid_metric)}",
                  *(f"test {metric_label(m)}" for m in self.metrics), "epochs", "wall s"]
        summaries = {name: self.summary(name) for name in self.runs}
        best = {c: max(s[c][0] for s in summaries.values()) for c in columns}
        best[columns[0]] = summaries[self.chosen][columns[0]][0]  # a valid metric may be better smaller
        lines = [
            f"# {self.dataset}: {', '.join(self.runs)}",
            "",
            f"Mean ± std over seeds of each model's best validation {metric_label(self.valid_metric)} (the score "
            "every run was selected on, epoch by epoch) and of its test metrics at that point; bold: the best "
            f"mean of a column. {CHOSEN_MARK}: the model best on validation, the one to pick (test metrics play "
            "no part in the choice).",
            "",
            "| " + " | ".join(header) + " |",
            "| --- | --- | ---: | " + " | ".join("---:" for _ in header[3:]) + " |",
        ]
        for name, records in self.runs.items():
            n = len(records)
            cells = [mean_std_text(*summaries[name][c], n, bold=summaries[name][c][0] == best[c]) for c in columns]
            shown = f"{name} {CHOSEN_MARK}" if name == self.chosen else name
            epochs = ", ".join(r.epochs for r in records)
            wall = statistics.fmean(r.wall_s or 0.0 for r in records)
            lines.append(f"| {shown} | {records[0].trainer} | {n} | " + " | ".join(cells) + f" | {epochs} | {wall:.0f} |")
        if command:
            lines += ["", f"Made by `{command}`; one record per run in `runs/`."]
        return "\n".join(lines) + "\n"

    def chart(self, path):
        """Bars of each test metric at the validation metric's cutoff, one per model, with
        std error bars over seeds; the chosen model's bar is hatched."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cutoff = self.valid_metric.partition("@")[2]
        shown = [m for m in self.metrics if m.partition("@")[2] == cutoff] or self.metrics
        names = list(self.runs)
        fig, axes = plt.subplots(1, len(shown), figsize=(1.2 + 1.1 * len(names) * len(shown), 4), squeeze=False)
        for ax, metric in zip(axes[0], shown):
            summaries = [self.summary(name)[f"test_{metric}"] for name in names]
            bars = ax.bar(range(len(names)), [mean for mean, _ in summaries], color=[f"C{i % 10}" for i in range(len(names))])
            ax.errorbar(range(len(names)), [mean for mean, _ in summaries], yerr=[std for _, std in summaries],
                        fmt="none", ecolor="black", capsize=3)
            bars[names.index(self.chosen)].set_hatch("//")
            ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0)
            ax.set_title(f"test {metric_label(metric)}")
        fig.suptitle(f"{self.dataset}: mean ± std over seeds; hatched: chosen on validation "
                     f"{metric_label(self.valid_metric)}", fontsize=9)
        fig.tight_layout()
        with replace_atomically(path) as temporary:
            fig.savefig(temporary, dpi=110, format="png")
        plt.close(fig)

    def write(self, folder, command=None):
        """``comparison.csv``, ``comparison.md`` and ``comparison.png`` in ``folder``; returns their paths."""
        folder = Path(folder)
        paths = [folder / f"comparison.{kind}" for kind in ("csv", "md", "png")]
        write_text_atomically(paths[0], self.csv())
        write_text_atomically(paths[1], self.markdown(command))
        self.chart(paths[2])
        return paths
