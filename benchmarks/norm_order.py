"""Prompt writing with and without the norm order of the ranking (recbole_recgpt/ranking.py),
on a writer after one pre-training epoch, in one process: the spread of the writer's item norms
(what decides how early the norm order stops), seconds, the share of the scores computed, and
whether the prompts are the same.

    python -m benchmarks.norm_order --dataset=amazon-beauty
    python -m benchmarks.norm_order --dataset=scale-100000 --batches=20 --loss=gbce

A ``scale-N`` dataset is ``benchmarks.scale``'s synthetic catalogue of N items (written to
``--data_path`` if it is not there; its default users and lengths), pre-trained with its
settings for ``--loss`` (sampled softmax by default; sparse gradients for the sampled losses);
any other comes from ``dataset/``, with the defaults. The share of scores computed depends on
how the writer's item norms spread, so it compares losses; the seconds need the machine alone.
"""

import argparse
import time
from pathlib import Path

import torch

import recbole_recgpt.model.recgpt as recgpt_module
from benchmarks.scale import LENGTH, USERS, settings, write_catalogue
from recbole_recgpt import ranking
from recbole_recgpt.config import create_config
from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.quick_start import build


class _Enough(Exception):
    """The batches asked for are written."""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--data_path", default="saved/scale-data")
    parser.add_argument("--batches", type=int, default=20, help="training batches whose prompts are written")
    parser.add_argument("--loss", default="sampled_softmax", choices=("ce", "sampled_softmax", "gbce"),
                        help="pre-training loss of the writer on a scale-N catalogue")
    args = parser.parse_args(argv)

    if args.dataset.startswith("scale-"):
        if not (Path(args.data_path) / args.dataset / f"{args.dataset}.inter").exists():
            write_catalogue(args.data_path, args.dataset, int(args.dataset[len("scale-"):]), USERS, LENGTH)
        overrides = settings(args.loss, args.data_path, args.dataset)
    else:
        overrides = {"epochs": 1, "show_progress": False}
    config = create_config("RecGPT", args.dataset, config_dict=overrides)
    torch.manual_seed(2020)
    _, (train_data, _, _), model, trainer = build(config)
    trainer.phase_name = "pretrain"
    trainer._train_epoch(UserSequenceDataLoader(config, train_data.dataset, neg_sample_num=0), 0)
    model.start_prompt_tuning()
    label = f"{args.dataset} ({args.loss})" if args.dataset.startswith("scale-") else args.dataset
    print(norm_spread(label, model.gpt.item_embedding.weight[1:]))  # row 0 is padding
    loader = UserSequenceDataLoader(config, train_data.dataset)
    scored, ranked = [], []
    product, rank = torch.mm, ranking.top_k

    def counting_product(left, right, **kwargs):
        scored.append(left.size(0) * right.size(1))
        return product(left, right, **kwargs)

    def counting_rank(vectors, catalogue, *rest, **kwargs):
        ranked.append(vectors.size(0) * len(catalogue))
        return rank(vectors, catalogue, *rest, **kwargs)

    def write():
        model.prompt_memory.clear()
        written = []

        def batch(*fields):
            if len(written) == args.batches:
                raise _Enough
            written.append(model.prompted_training_batch(*fields).item_seq.clone())

        start = time.perf_counter()
        try:
            loader.write_prompts(batch)
        except _Enough:
            pass
        return time.perf_counter() - start, written

    seconds, ordered = write()
    norm_ordered = ranking._NormOrdered
    ranking._NormOrdered = ranking._InOrder  # the same scan over the catalogue in id order
    try:
        unordered_seconds, unordered = write()
    finally:
        ranking._NormOrdered = norm_ordered
    torch.mm, recgpt_module.top_k = counting_product, counting_rank
    try:
        write()
    finally:
        torch.mm, recgpt_module.top_k = product, rank
    same = len(ordered) == len(unordered) and all(torch.equal(a, b) for a, b in zip(ordered, unordered))
    print(f"{label}: prompts of {len(ordered)} batches written in {unordered_seconds:.1f} s in id order, "
          f"{seconds:.1f} s in norm order ({unordered_seconds / seconds:.2f}x); scores computed in norm order: "
          f"{sum(scored) / sum(ranked):.1%} of all; same prompts: {same}")


def norm_spread(name, item_table):
    """How the item norms spread, which decides how early a norm-ordered scan stops: a row stops
    once its k-th score beats its norm times the largest norm left, so the scan ends early only
    where most items' norms lie well below the largest ones."""
    norms = item_table.detach().norm(dim=1)
    quantiles = torch.quantile(norms, norms.new_tensor([0.5, 0.9, 0.99]))
    largest = norms.max()
    return (f"{name}: item norms: median {quantiles[0]:.3f}, 90% {quantiles[1]:.3f}, 99% {quantiles[2]:.3f}, "
            f"largest {largest:.3f}; items above half the largest: {(norms > largest / 2).float().mean():.1%}")


if __name__ == "__main__":
    main()
