"""What a model ranks first: the tallies of benchmarks/prompt_stats.py on known rankings."""

import torch

from benchmarks.prompt_stats import Tally


def test_tally_counts_current_item_history_items_and_hits():
    tally = Tally(k=3)
    history = torch.tensor([[4, 2, 3, 0], [1, 6, 0, 0], [8, 0, 0, 0]])
    length = torch.tensor([3, 2, 1])
    predicted = torch.tensor([[3, 5, 7], [1, 9, 2], [5, 8, 1]])
    target = torch.tensor([5, 1, 5])
    tally.add(history, length, predicted, target)
    # Row 1's top-1 is its current item; row 2's an older history item that repeats as the target;
    # row 3's a new item, the right one.
    assert tally.summary() == {"pairs": 3, "top1_is_current_item": 0.3333, "top1_in_history": 0.6667,
                               "hit@1": 0.6667, "hit@3": 1.0}
