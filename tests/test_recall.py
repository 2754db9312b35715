"""Two-stage recall, specified on constructed scores."""

import torch

from recbole_recgpt.model.prompts import PROMPT_SEGMENT, PromptedBatch
from recbole_recgpt.model.recall import TwoStageRecall, merge_two_stage

STAGE1 = torch.tensor([0.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])  # ranks 1, 2, 3, ...
STAGE2 = torch.tensor([0.0, 0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])  # ranks 1, 9, 8, 7, ...


def constructed_score_at(calls):
    """Stage-1 scores when read at a real item, stage-2 scores when read at a prompt."""

    def score_at(item_seq, segment_ids, index):
        calls.append((item_seq.clone(), segment_ids.clone(), index.clone()))
        at_prompt = segment_ids.gather(1, index.unsqueeze(1)).squeeze(1) == PROMPT_SEGMENT
        return torch.where(at_prompt.unsqueeze(1), STAGE2, STAGE1)

    return score_at


def history_batch():
    # History [5, 6] with two empty tail slots after its last real item.
    return PromptedBatch(
        item_seq=torch.tensor([[5, 6, 0, 0]]),
        segment_ids=torch.zeros(1, 4, dtype=torch.long),
        target_seq=None,
        last_item_index=torch.tensor([1]),
        tail_length=2,
    )


def test_list_is_stage1_top_n_then_stage2_excluding_them():
    calls = []
    scores = TwoStageRecall(stage1_n=3)(constructed_score_at(calls), history_batch())
    ranking = scores.topk(9, dim=1).indices[0].tolist()
    assert ranking[:3] == [1, 2, 3]
    assert ranking[3:] == [9, 8, 7, 6, 5, 4]


def test_stage2_reads_the_end_of_the_extension_written_with_stage1_items():
    calls = []
    TwoStageRecall(stage1_n=3)(constructed_score_at(calls), history_batch())
    (_, _, first_index), (item_seq, segment_ids, second_index) = calls
    assert first_index.tolist() == [1]
    assert item_seq.tolist() == [[5, 6, 1, 2]]  # the first K=2 stage-1 items appended
    assert segment_ids.tolist() == [[0, 0, 1, 1]]
    assert second_index.tolist() == [3]


def test_an_extension_longer_than_the_tail_writes_all_its_stage1_items():
    calls = []
    TwoStageRecall(stage1_n=3, extension_length=3)(constructed_score_at(calls), history_batch())
    (item_seq, segment_ids, index) = calls[1]
    assert item_seq.tolist() == [[5, 6, 1, 2, 3]]  # the row widened by one slot
    assert segment_ids.tolist() == [[0, 0, 1, 1, 1]]
    assert index.tolist() == [4]


def test_an_extension_past_the_position_table_drops_the_oldest_block():
    # Item 5 with its prompt 7, item 6 with its prompt 8: blocks of two; room for 5 positions.
    batch = PromptedBatch(
        item_seq=torch.tensor([[5, 7, 6, 8], [6, 8, 0, 0]]),
        segment_ids=torch.tensor([[0, 1, 0, 1], [0, 1, 0, 0]]),
        target_seq=None,
        last_item_index=torch.tensor([2, 0]),
        tail_length=1,
    )
    calls = []
    TwoStageRecall(stage1_n=3, extension_length=3, n_positions=5)(constructed_score_at(calls), batch)
    (item_seq, segment_ids, index) = calls[1]
    # Row 0 needs positions 0..5: it loses item 5 and its prompt, never half a block.
    assert item_seq.tolist() == [[6, 1, 2, 3, 0], [6, 1, 2, 3, 0]]
    assert segment_ids.tolist() == [[0, 1, 1, 1, 0], [0, 1, 1, 1, 0]]
    assert index.tolist() == [3, 3]


def test_excluded_items_take_no_slot_in_either_stage():
    calls = []
    history = torch.tensor([[1, 6, 0]])  # stage 1's best (1) and a stage-2 item (6); 0 = none
    scores = TwoStageRecall(stage1_n=3)(constructed_score_at(calls), history_batch(), history)
    ranking = scores.topk(7, dim=1).indices[0].tolist()
    assert ranking[:3] == [2, 3, 4]
    assert ranking[3:] == [9, 8, 7, 5]
    assert torch.isinf(scores[0, [0, 1, 6]]).all()
    (item_seq, _, _) = calls[1]
    assert item_seq.tolist() == [[5, 6, 2, 3]]  # the extension holds items that can count


def test_merge_ranks_stage1_above_everything_even_for_large_scores():
    stage2 = torch.tensor([[-torch.inf, 1e7, 3e7, 2e7, -5.0]])
    merged = merge_two_stage(torch.tensor([[4, 1]]), stage2)
    assert merged.topk(4, dim=1).indices[0].tolist() == [4, 1, 2, 3]


def test_merge_keeps_stage2_order_for_the_rest():
    stage2 = torch.randn(3, 50)
    stage1_items = torch.stack([torch.randperm(49)[:5] + 1 for _ in range(3)])
    merged = merge_two_stage(stage1_items, stage2)
    ranking = merged.topk(50, dim=1).indices
    for row in range(3):
        assert ranking[row, :5].tolist() == stage1_items[row].tolist()
        rest = [i for i in stage2[row].argsort(descending=True).tolist() if i not in stage1_items[row]]
        assert ranking[row, 5:].tolist() == rest
