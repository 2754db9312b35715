"""RecGPT against RecBole's stock SASRec: time and peak memory, as ratios, in one process.

    python -m benchmarks.speed --dataset=amazon-beauty --out=results/speed.json

Both models get the same data, split and backbone (hidden 64, 2 layers, 2 heads, inner 256,
histories of 50, the same dropout) and run under the same allocator and thread settings.
Measured: one training epoch of SASRec (RecBole's Trainer, one padded row per prefix, and
the whole-sequence trainer, the baselines' default), of RecGPT pre-training and of RecGPT
prompt-tuning, each with the default full-softmax loss and (whole-sequence SASRec, RecGPT)
with each sampled loss (sampled softmax, gBCE), and (whole-sequence SASRec, RecGPT
prompt-tuning) with the full softmax scored in chunks of positions (``ce_chunk_rows``); writing the prompts of every training
sequence; full-sort evaluation of every validation user (SASRec: one pass; RecGPT: prompts,
then two-stage recall; the first validation of a phase, which finds the frozen writer's
training prompts written and recalls them for the histories that extend them, and a repeated
one). Short measurements are repeated and the median is reported. Where RecGPT's
evaluation spends its time (``recgpt_eval_breakdown``: prompt writing, the stage-1 passes, the
stage-2 continuations, the catalogue top-k of both stages, the rest) is read from one more first
and one more repeated validation, outside the timed ones.
Results are written after every measurement, so an interrupted run keeps what it measured.
It imports the installed package (``pip install -e .`` in the checkout), as any user code would.
"""

import argparse
import collections
import contextlib
import copy
import ctypes
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

if not __package__:  # run as `python benchmarks/speed.py`: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.documents import rewrite_block
from benchmarks.store import git_revision
from recbole_recgpt.config import create_config
from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.model import layers as recgpt_layers, prompts as recgpt_prompts, recgpt as recgpt_module
from recbole_recgpt.quick_start import build
from recbole_recgpt.trainer import WholeSequenceTrainer
from recbole_recgpt.utils import get_model, get_trainer

# Measured beside full CE with the settings of their campaign rows (SASRec-SS, RecGPT-gBCE, ...),
# whose speed the which-loss verdict reads: dense item gradients (sparse ones are the scale
# benchmark's, where the table's update dominates).
SAMPLED_LOSSES = ("sampled_softmax", "gbce")
CE_CHUNK_ROWS = 256  # the chunked full softmax's rows per chunk (ce_chunk_rows) in its two rows
BACKBONE = {
    "hidden_size": 64, "n_layers": 2, "n_heads": 2, "inner_size": 256,
    "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "MAX_ITEM_LIST_LENGTH": 50,
}


def release_free_memory():
    """Hand freed heap back to the OS, so that one measurement's peak is not hidden inside
    memory an earlier one left mapped (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every 5 ms."""

    def __enter__(self):
        release_free_memory()
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def megabytes(self):
        return (self.peak - self.base) / 2**20


def measure(function, repeats, setup=None):
    """Median seconds and the largest peak memory (MB) over ``repeats`` calls, each after an
    untimed ``setup()``."""
    seconds, memory = [], []
    for _ in range(repeats):
        if setup:
            setup()
        with PeakMemory() as peak:
            start = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - start)
        memory.append(peak.megabytes)
    return {"seconds": statistics.median(seconds), "all_seconds": seconds, "peak_mb": max(memory)}


class Stopwatch:
    """Seconds spent inside the callables it wraps, by label; a call made inside another
    wrapped call counts for the outer one only (the writer's own top-k is writing)."""

    def __init__(self):
        self.seconds, self.inside = collections.Counter(), False

    def wrap(self, label, function):
        def timed(*args, **kwargs):
            if self.inside:
                return function(*args, **kwargs)
            self.inside, start = True, time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.inside = False

        return timed


def evaluation_breakdown(evaluate, setup=None):
    """Seconds of one ``evaluate()`` call of RecGPT (after an untimed ``setup()``) by part:
    ``{part: seconds}``, ``total`` included."""
    if setup:
        setup()
    watch = Stopwatch()
    parts = (
        ("prompt writing", recgpt_prompts.PromptMemory, "_write"),
        ("stage-1 passes", recgpt_layers.ItemGPT, "states_at"),
        ("stage-2 continuations", recgpt_layers.ItemGPT, "continue_from"),
        ("catalogue top-k", recgpt_module, "top_k"),
    )
    with contextlib.ExitStack() as patches:
        for label, owner, name in parts:
            original = getattr(owner, name)
            patches.callback(setattr, owner, name, original)
            setattr(owner, name, watch.wrap(label, original))
        start = time.perf_counter()
        evaluate()
        total = time.perf_counter() - start
    seconds = {label: round(watch.seconds[label], 6) for label, _, _ in parts}
    return {**seconds, "rest": round(total - sum(seconds.values()), 6), "total": round(total, 6)}


# The table of docs/performance.md: (measurement, what it is, the measurement it is a ratio of
# and how that reads, the target).
TABLE_ROWS = (
    ("sasrec_train_epoch", "SASRec training epoch, RecBole's trainer ({sasrec_rows:,} padded prefix rows)", None, ""),
    ("sasrec_whole_sequence_epoch", "SASRec training epoch, whole-sequence trainer (same pairs, full-softmax CE)",
     ("sasrec_train_epoch", "x"), ""),
    ("sasrec_whole_sequence_epoch_sampled_softmax", "same, sampled softmax (256 negatives shared by the batch)",
     ("sasrec_whole_sequence_epoch", "x its CE epoch"), ""),
    ("sasrec_whole_sequence_epoch_gbce", "same, gBCE (256 negatives per position, t = 0.75)",
     ("sasrec_whole_sequence_epoch", "x its CE epoch"), ""),
    ("sasrec_whole_sequence_epoch_ce_chunks", f"same, full softmax in chunks of {CE_CHUNK_ROWS} positions (`ce_chunk_rows`)",
     ("sasrec_whole_sequence_epoch", "x its CE epoch"), ""),
    ("recgpt_pretrain_epoch", "RecGPT pre-training epoch (same pairs, full-softmax CE)",
     ("sasrec_whole_sequence_epoch", "x the whole-sequence SASRec epoch"), ""),
    ("recgpt_pretrain_epoch_sampled_softmax", "same, sampled softmax",
     ("sasrec_whole_sequence_epoch_sampled_softmax", "x SASRec's sampled epoch"), ""),
    ("recgpt_pretrain_epoch_gbce", "same, gBCE", ("sasrec_whole_sequence_epoch_gbce", "x SASRec's gBCE epoch"), ""),
    ("recgpt_prompt_tuning_epoch", "RecGPT prompt-tuning epoch (K = 1: 2 x the positions; full-softmax CE)",
     ("sasrec_whole_sequence_epoch", "x the whole-sequence SASRec epoch"), "<= 1 x"),
    ("recgpt_prompt_tuning_epoch_sampled_softmax", "same, sampled softmax",
     ("sasrec_whole_sequence_epoch_sampled_softmax", "x SASRec's sampled epoch"), ""),
    ("recgpt_prompt_tuning_epoch_gbce", "same, gBCE", ("sasrec_whole_sequence_epoch_gbce", "x SASRec's gBCE epoch"), ""),
    ("recgpt_prompt_tuning_epoch_ce_chunks", f"same, full softmax in chunks of {CE_CHUNK_ROWS} positions",
     ("sasrec_whole_sequence_epoch_ce_chunks", "x SASRec's chunked epoch"), ""),
    ("recgpt_prompt_writing", "writing the prompts of every training sequence", ("sasrec_train_epoch", "x"), ""),
    ("sasrec_full_sort_eval", "SASRec full-sort evaluation of every validation user", None, ""),
    ("recgpt_two_stage_eval", "RecGPT evaluation, a phase's first (training prompts written): prompts, then "
     "two-stage recall, same users", ("sasrec_full_sort_eval", "x"), "<= 1.5 x"),
    ("recgpt_two_stage_eval_repeated", "same, repeated", ("sasrec_full_sort_eval", "x"), ""),
)
TABLE_START = "<!-- speed table: python -m benchmarks.speed --table=docs/performance.md -->"
TABLE_END = "<!-- end of speed table -->"


def speed_table(report):
    """The markdown table of a ``results/speed.json`` report: seconds, ratio, target, peak MB."""
    measured = report["measurements"]
    lines = [f"| measurement ({report['dataset']}) | seconds | ratio | target | peak MB |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, label, ratio_of, target in TABLE_ROWS:
        if name not in measured:
            continue
        seconds = measured[name]["seconds"]
        ratio = "1"
        if ratio_of and ratio_of[0] in measured:
            value = seconds / measured[ratio_of[0]]["seconds"]
            ratio = f"{value:.2f} {ratio_of[1]}" if value >= 0.1 else f"{value:.3f} {ratio_of[1]}"
        label = label.format(**report.get("pairs_per_epoch", {}))
        shown = f"{seconds:.1f}" if seconds >= 10 else f"{seconds:.2f}"
        lines.append(f"| {label} | {shown} | {ratio} | {target} | {measured[name]['peak_mb']:,.0f} |")
    return lines


def write_table(document, report):
    """Rewrite the table between :data:`TABLE_START` and :data:`TABLE_END` in ``document``."""
    rewrite_block(document, TABLE_START, TABLE_END, speed_table(report))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--out", default="results/speed.json")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of the short measurements")
    parser.add_argument("--sasrec_repeats", type=int, default=1, help="repetitions of the SASRec epoch")
    parser.add_argument("--table", metavar="DOCUMENT", help="measure nothing: rewrite DOCUMENT's table from --out")
    args = parser.parse_args()
    if args.table:
        write_table(args.table, json.loads(Path(args.out).read_text()))
        return
    overrides = {**BACKBONE, "show_progress": False, "seed": 2020}
    if args.data_path:
        overrides["data_path"] = args.data_path

    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    # Measurements are kept only to resume an interrupted run of the same code on the same data.
    if (report.get("dataset"), report.get("git_revision")) != (args.dataset, git_revision()):
        report = {}
    report.update({
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "dataset": args.dataset,
        "git_revision": git_revision(),
        "backbone": BACKBONE,
        "environment": {
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
        },
    })
    measurements = report.setdefault("measurements", {})
    started = time.time()

    def record(name, function, repeats, setup=None):
        if name in measurements:
            print(f"{name}: kept from the earlier run", flush=True)
            return
        measurements[name] = measure(function, repeats, setup)
        print(f"{name}: {measurements[name]['seconds']:.2f} s, peak +{measurements[name]['peak_mb']:.0f} MB", flush=True)
        save()

    def save():
        ratios = {}
        m = {k: v["seconds"] for k, v in measurements.items()}
        for name, baseline in (
            ("sasrec_whole_sequence_epoch", "sasrec_train_epoch"),
            ("recgpt_pretrain_epoch", "sasrec_train_epoch"), ("recgpt_prompt_tuning_epoch", "sasrec_train_epoch"),
            ("recgpt_prompt_writing", "sasrec_train_epoch"), ("recgpt_two_stage_eval", "sasrec_full_sort_eval"),
            ("recgpt_two_stage_eval_repeated", "sasrec_full_sort_eval"),
            # The targets: prompt-tuning against the baselines' own (whole-sequence) epoch, like
            # with like for each loss.
            ("recgpt_pretrain_epoch", "sasrec_whole_sequence_epoch"),
            ("recgpt_prompt_tuning_epoch", "sasrec_whole_sequence_epoch"),
            *((f"{model}_epoch_{loss}", f"sasrec_whole_sequence_epoch_{loss}") for loss in SAMPLED_LOSSES
              for model in ("recgpt_pretrain", "recgpt_prompt_tuning")),
            *((f"sasrec_whole_sequence_epoch_{loss}", "sasrec_whole_sequence_epoch") for loss in SAMPLED_LOSSES),
            ("sasrec_whole_sequence_epoch_ce_chunks", "sasrec_whole_sequence_epoch"),
            ("recgpt_prompt_tuning_epoch_ce_chunks", "recgpt_prompt_tuning_epoch"),
            ("recgpt_prompt_tuning_epoch_ce_chunks", "sasrec_whole_sequence_epoch_ce_chunks"),
        ):
            if name in m and m.get(baseline):
                ratios[f"{name} / {baseline}"] = m[name] / m[baseline]
        report["ratios"] = ratios
        report["wall_seconds"] = report.get("wall_seconds_before", 0) + time.time() - started
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    # The stock trainer is the reference: RecBole's own, one padded row per prefix.
    sasrec_config = create_config("SASRec", args.dataset, config_dict={**overrides, "baseline_trainer": "recbole"})
    dataset, (train_data, valid_data, _), sasrec, sasrec_trainer = build(sasrec_config)
    record("sasrec_train_epoch", lambda: sasrec_trainer._train_epoch(train_data, 0), args.sasrec_repeats)
    record("sasrec_full_sort_eval", lambda: sasrec_trainer.evaluate(valid_data, load_best_model=False), args.repeats)
    whole_sequence = WholeSequenceTrainer(sasrec_config, sasrec)
    sequences = UserSequenceDataLoader(sasrec_config, train_data.dataset)
    record("sasrec_whole_sequence_epoch", lambda: whole_sequence._train_epoch(sequences, 0), args.repeats)
    for loss in SAMPLED_LOSSES:
        sampled = {"baseline_loss": loss}
        sampled_config = create_config("SASRec", args.dataset, config_dict={**overrides, **sampled})
        torch.manual_seed(2020)
        sampled_sasrec = get_model("SASRec")(sampled_config, train_data.dataset)
        sampled_trainer = WholeSequenceTrainer(sampled_config, sampled_sasrec)
        sampled_trainer.use_training_data(train_data.dataset)
        record(f"sasrec_whole_sequence_epoch_{loss}", lambda: sampled_trainer._train_epoch(sequences, 0), args.repeats)

    def fresh_recgpt(**settings):
        """A RecGPT and its trainer from the same start as every other measured RecGPT."""
        config = create_config("RecGPT", args.dataset, config_dict={**overrides, **settings})
        torch.manual_seed(2020)
        model = get_model("RecGPT")(config, train_data.dataset)
        return config, model, get_trainer(config["MODEL_TYPE"], "RecGPT")(config, model)

    def prompt_tuning(config, model, trainer):
        """Enter phase 2 and return its loader, the training prompts written."""
        model.start_prompt_tuning()
        trainer.phase_name = "finetune"
        loader = UserSequenceDataLoader(config, train_data.dataset)
        loader.write_prompts(model.prompted_training_batch)
        return loader

    recgpt_config, recgpt, recgpt_trainer = fresh_recgpt()
    # The loader samples negatives only for the loss that reads them (bce), as the trainer's does.
    negatives = recgpt_config["neg_sample_num"] if recgpt_config["pretrain_loss"] == "bce" else 0
    pretrain_data = UserSequenceDataLoader(recgpt_config, train_data.dataset, neg_sample_num=negatives)
    recgpt_trainer.phase_name = "pretrain"
    record("recgpt_pretrain_epoch", lambda: recgpt_trainer._train_epoch(pretrain_data, 0), args.repeats)

    # The same two phases with each sampled loss, from the same start.
    for loss in SAMPLED_LOSSES:
        sampled_recgpt = fresh_recgpt(pretrain_loss=loss, finetune_loss=loss)
        sampled_recgpt[2].phase_name = "pretrain"
        plain_data = UserSequenceDataLoader(sampled_recgpt[0], train_data.dataset)
        record(f"recgpt_pretrain_epoch_{loss}", lambda: sampled_recgpt[2]._train_epoch(plain_data, 0), args.repeats)
        sampled_tuning_data = prompt_tuning(*sampled_recgpt)
        record(f"recgpt_prompt_tuning_epoch_{loss}",
               lambda: sampled_recgpt[2]._train_epoch(sampled_tuning_data, 0), args.repeats)

    # The full softmax in chunks of positions (ce_chunk_rows), same losses otherwise.
    chunked = {"ce_chunk_rows": CE_CHUNK_ROWS}
    chunked_config = create_config("SASRec", args.dataset, config_dict={**overrides, **chunked})
    torch.manual_seed(2020)
    chunked_trainer = WholeSequenceTrainer(chunked_config, get_model("SASRec")(chunked_config, train_data.dataset))
    chunked_trainer.use_training_data(train_data.dataset)
    record("sasrec_whole_sequence_epoch_ce_chunks", lambda: chunked_trainer._train_epoch(sequences, 0), args.repeats)
    chunked_recgpt = fresh_recgpt(**chunked)
    chunked_tuning_data = prompt_tuning(*chunked_recgpt)
    record("recgpt_prompt_tuning_epoch_ce_chunks",
           lambda: chunked_recgpt[2]._train_epoch(chunked_tuning_data, 0), args.repeats)

    recgpt.start_prompt_tuning()
    recgpt_trainer.phase_name = "finetune"
    tuning_data = UserSequenceDataLoader(recgpt_config, train_data.dataset)
    record("recgpt_prompt_writing", lambda: tuning_data.write_prompts(recgpt.prompted_training_batch), args.repeats,
           setup=recgpt.prompt_memory.clear)  # written, not recalled
    recgpt.prompt_memory.clear()
    tuning_data.write_prompts(recgpt.prompted_training_batch)
    training_prompts = copy.deepcopy(recgpt.prompt_memory)
    record("recgpt_prompt_tuning_epoch", lambda: recgpt_trainer._train_epoch(tuning_data, 0), args.repeats)

    def as_after_prompt_writing():
        # The first validation of a phase finds only the training sequences' prompts written.
        recgpt.prompt_memory = copy.deepcopy(training_prompts)

    def validation():
        recgpt_trainer.evaluate(valid_data, load_best_model=False)

    record("recgpt_two_stage_eval", validation, args.repeats, setup=as_after_prompt_writing)
    # Later validations of a phase find the frozen writer's prompts already written.
    record("recgpt_two_stage_eval_repeated", lambda: recgpt_trainer.evaluate(valid_data, load_best_model=False), args.repeats)
    report["recgpt_eval_breakdown"] = {
        "first": evaluation_breakdown(validation, setup=as_after_prompt_writing),
        "repeated": evaluation_breakdown(validation),
    }
    print("RecGPT evaluation by part:", json.dumps(report["recgpt_eval_breakdown"], indent=2), flush=True)
    report["pairs_per_epoch"] = {"sasrec_rows": len(train_data.dataset), "recgpt_pairs": pretrain_data.pair_count}
    save()
    print(json.dumps(report["ratios"], indent=2))


if __name__ == "__main__":
    main()
