"""What a model ranks first, and what the prompt writer writes: measured on a saved
checkpoint, without training.

    python -m benchmarks.prompt_stats --checkpoint=saved/RecGPT-amazon-beauty-...-pretrain.pth \\
        --out=results/prompt-stats-amazon-beauty.json

For any sequential model (``validation_ranking``): the model's own full-sort ranking of every
validation history, as evaluation scores it. For RecGPT also the writer of phase 2, the
phase-1 network (``gpt`` of a pre-training checkpoint), after every training prefix and
after every validation history. Each reports how often the top-1 item is the current (last)
item, an item already in the history, or the true next item (HR@1), and HR@k. A writer that
is far more accurate on training pairs than on validation pairs memorised them: the prompts
the tuned model learns from in training are then better than any it will see at test time.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from benchmarks.store import git_revision
from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.ranking import excluded_lists, full_sort_top_k, top_k
from recbole_recgpt.quick_start import load_data_and_model


class Tally:
    """Counts over (history, predicted top-k, true next item) triples."""

    def __init__(self, k):
        self.k = k
        self.pairs = self.is_current = self.in_history = self.hit1 = self.hitk = 0

    def add(self, history, length, predicted, target):
        """history ``[B, T]`` (right-padded), length ``[B]``, predicted ``[B, k]``, target ``[B]``."""
        top1 = predicted[:, 0]
        current = history.gather(1, (length - 1).unsqueeze(1)).squeeze(1)
        self.pairs += len(target)
        self.is_current += int((top1 == current).sum())
        self.in_history += int((history == top1.unsqueeze(1)).any(dim=1).sum())
        self.hit1 += int((top1 == target).sum())
        self.hitk += int((predicted == target.unsqueeze(1)).any(dim=1).sum())

    def summary(self):
        share = lambda count: round(count / max(self.pairs, 1), 4)  # noqa: E731
        return {
            "pairs": self.pairs, "top1_is_current_item": share(self.is_current),
            "top1_in_history": share(self.in_history), "hit@1": share(self.hit1), f"hit@{self.k}": share(self.hitk),
        }


def writer(model):
    """The phase-1 network: the frozen prompt writer of a prompt-tuned checkpoint, else ``gpt``."""
    network = model.prompt_writer if model.prompt_tuned and model.prompt_writer is not None else model.gpt
    return network.eval()


@torch.no_grad()
def training_pairs(model, config, dataset, k):
    """Writer predictions after every prefix of every training sequence."""
    tally = Tally(k)
    network = writer(model)
    for batch in UserSequenceDataLoader(config, dataset, shuffle=False):
        item_seq, targets = batch[model.ITEM_SEQ], batch[model.TARGET_SEQ]
        hidden = model.forward(item_seq, user_ids=batch[model.USER_ID], network=network)
        for t in range(item_seq.size(1)):
            rows = targets[:, t] > 0
            if rows.any():
                predicted = top_k(hidden[rows, t], network.item_embedding.weight, k)
                # The history of prefix t is items 0..t; later inputs are the future.
                history = item_seq[rows, : t + 1]
                tally.add(history, torch.full((int(rows.sum()),), t + 1), predicted, targets[rows, t])
    return tally.summary()


@torch.no_grad()
def evaluation_pairs(model, loader, k):
    """Writer predictions after every validation (or test) history."""
    tally = Tally(k)
    network = writer(model)
    for interaction, _, _, positive_i in loader:
        item_seq, length = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        hidden = model.forward(item_seq, user_ids=interaction[model.USER_ID], network=network)
        predicted = top_k(model.gather_indexes(hidden, length - 1), network.item_embedding.weight, k)
        tally.add(item_seq, length, predicted, interaction[model.ITEM_ID])
    return tally.summary()


@torch.no_grad()
def ranking_pairs(model, loader, k):
    """The model's full-sort top-``k`` for every validation (or test) history."""
    tally = Tally(k)
    model.eval()
    for interaction, history_index, _, _ in loader:
        # As evaluation ranks: the loader names what the protocol skips.
        excluded = excluded_lists(history_index, len(interaction))
        tally.add(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], full_sort_top_k(model, interaction, k, excluded),
                  interaction[model.ITEM_ID])
    return tally.summary()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a RecGPT checkpoint; its phase-1 network is measured")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    config, model, _, train_data, valid_data, _ = load_data_and_model(args.checkpoint)
    report = {
        "checkpoint": args.checkpoint,
        "dataset": config["dataset"],
        "model": config["model"],
        "config": {key: config[key] for key in ("pretrain_loss", "hidden_dropout_prob", "attn_dropout_prob", "seed")},
        "validation_ranking": ranking_pairs(model, valid_data, args.k),
    }
    if hasattr(model, "prompted_training_batch"):  # a model that writes prompts
        report["training_pairs"] = training_pairs(model, config, train_data.dataset, args.k)
        report["validation_pairs"] = evaluation_pairs(model, valid_data, args.k)
    report.update(git=git_revision(), command=shlex.join(["python", "-m", "benchmarks.prompt_stats", *argv]))
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
