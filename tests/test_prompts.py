"""The prompt builder, specified on a hand-made generator with a known ranking.

The generator ranks, after item x, the items x+1, x+2, ... first (wrapping within 1..9), so
every prompt in these tests can be written down by hand.
"""

import torch

from recbole_recgpt.model.prompts import PromptBuilder, PromptMemory, history_so_far, with_tail_slots

N_ITEMS = 10  # ids 1..9, 0 = padding


def successor_generator(calls=None):
    def generate(item_seq, segment_ids, mask, k):
        if calls is not None:
            calls.append(item_seq.clone())
        last = item_seq[mask]
        steps = torch.arange(1, k + 1)
        return (last.unsqueeze(-1) + steps - 1) % (N_ITEMS - 1) + 1

    return generate


def t(rows):
    return torch.tensor(rows)


def test_history_so_far_lists_the_tokens_up_to_each_masked_position():
    item_seq = t([[4, 5, 6, 0], [7, 8, 0, 0]])
    mask = t([[True, False, True, False], [False, True, False, False]])
    assert history_so_far(item_seq, mask).tolist() == [[4, 0, 0, 0], [4, 5, 6, 0], [7, 8, 0, 0]]


def test_insert_writes_top_k_after_every_real_item():
    builder = PromptBuilder(prompt_length=2, prompt_mode="insert")
    batch = builder.for_training(
        successor_generator(), t([[1, 3, 5], [4, 0, 0]]), t([3, 1]), t([[3, 5, 8], [7, 0, 0]])
    )
    assert batch.item_seq.tolist() == [[1, 2, 3, 3, 4, 5, 5, 6, 7], [4, 5, 6, 0, 0, 0, 0, 0, 0]]
    assert batch.segment_ids.tolist() == [[0, 1, 1, 0, 1, 1, 0, 1, 1], [0, 1, 1, 0, 0, 0, 0, 0, 0]]
    # Every position of block s, prompts included, learns the real next item i_{s+1}.
    assert batch.target_seq.tolist() == [[3, 3, 3, 5, 5, 5, 8, 8, 8], [7, 7, 7, 0, 0, 0, 0, 0, 0]]
    assert batch.last_item_index.tolist() == [6, 0]


def test_insert_prompts_come_from_one_pass_over_the_real_history():
    calls = []
    builder = PromptBuilder(prompt_length=3, prompt_mode="insert")
    builder.for_training(successor_generator(calls), t([[1, 3, 5]]), t([3]), t([[3, 5, 8]]))
    assert len(calls) == 1 and calls[0].tolist() == [[1, 3, 5]]


def test_unsupervised_prompts_get_no_target():
    builder = PromptBuilder(prompt_length=2, prompt_mode="insert", supervise_prompts=False)
    batch = builder.for_training(successor_generator(), t([[1, 3, 5]]), t([3]), t([[3, 5, 8]]))
    assert batch.target_seq.tolist() == [[3, 0, 0, 5, 0, 0, 8, 0, 0]]


def test_zero_prompt_length_leaves_sequences_unchanged():
    builder = PromptBuilder(prompt_length=0, prompt_mode="insert")
    batch = builder.for_training(successor_generator(), t([[1, 3, 5]]), t([3]), t([[3, 5, 8]]))
    assert batch.item_seq.tolist() == [[1, 3, 5]]
    assert batch.target_seq.tolist() == [[3, 5, 8]]


def test_insert_at_inference_reads_the_last_real_item_and_leaves_tail_slots():
    builder = PromptBuilder(prompt_length=2, prompt_mode="insert")
    batch = builder.for_inference(successor_generator(), t([[1, 3, 5], [4, 0, 0]]), t([3, 1]))
    assert batch.target_seq is None
    # The last item's prompts would follow the state that ranks (and stage 2 writes there): the
    # tail slots stay empty, and a one-item history needs no prompt at all.
    assert batch.item_seq.tolist() == [[1, 2, 3, 3, 4, 5, 5, 0, 0], [4, 0, 0, 0, 0, 0, 0, 0, 0]]
    assert batch.segment_ids.tolist() == [[0, 1, 1, 0, 1, 1, 0, 0, 0], [0] * 9]
    assert batch.last_item_index.tolist() == [6, 0]
    assert batch.tail_length == 2


def test_replace_tail_generates_greedily_and_keeps_the_replaced_targets():
    builder = PromptBuilder(prompt_length=2, prompt_mode="replace_tail")
    inputs, targets = t([[1, 3, 5, 7], [2, 0, 0, 0]]), t([[3, 5, 7, 9], [6, 0, 0, 0]])
    batch = builder.for_training(successor_generator(), inputs, t([4, 1]), targets)
    # After 3 comes 4; the second item follows the generated 4 (greedy), not the real 5.
    assert batch.item_seq.tolist() == [[1, 3, 4, 5], [2, 0, 0, 0]]
    assert batch.segment_ids.tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    assert batch.target_seq.tolist() == [[3, 5, 7, 9], [6, 0, 0, 0]]
    assert inputs.tolist() == [[1, 3, 5, 7], [2, 0, 0, 0]], "inputs must not be modified in place"


def test_replace_tail_without_prompt_supervision():
    builder = PromptBuilder(prompt_length=1, prompt_mode="replace_tail", supervise_prompts=False)
    batch = builder.for_training(successor_generator(), t([[1, 3, 5]]), t([3]), t([[3, 5, 8]]))
    assert batch.item_seq.tolist() == [[1, 3, 4]]
    assert batch.target_seq.tolist() == [[3, 5, 0]]


def test_replace_tail_at_inference_keeps_the_history_and_adds_tail_slots():
    builder = PromptBuilder(prompt_length=2, prompt_mode="replace_tail")
    batch = builder.for_inference(successor_generator(), t([[1, 3, 5], [4, 0, 0]]), t([3, 1]))
    assert batch.item_seq.tolist() == [[1, 3, 5, 0, 0], [4, 0, 0, 0, 0]]
    assert batch.segment_ids.tolist() == [[0] * 5, [0] * 5]
    assert batch.last_item_index.tolist() == [2, 0]


def test_with_tail_slots_pads_the_right():
    batch = with_tail_slots(t([[1, 2]]), t([2]), 3)
    assert batch.item_seq.tolist() == [[1, 2, 0, 0, 0]]
    assert batch.tail_length == 3


def prefix_generator(asked):
    """Makes, for some users, a generator whose prompts depend on the whole prefix and the
    user: prompt j at a position is (user + sum of the tokens so far + j) wrapped to 1..9.
    ``asked`` collects the (row's user, position) pairs it was asked to write."""

    def make(user_ids):
        def generate(item_seq, segment_ids, mask, k):
            rows, positions = mask.nonzero(as_tuple=True)
            asked.extend(zip(user_ids[rows].tolist(), positions.tolist()))
            totals = item_seq.cumsum(dim=1)[mask] + user_ids[rows]
            return (totals.unsqueeze(-1) + torch.arange(k)) % (N_ITEMS - 1) + 1

        return generate

    return make


def all_but_last(item_seq):
    lengths = (item_seq > 0).sum(dim=1, keepdim=True)
    return torch.arange(item_seq.size(1)) < lengths - 1


def test_memory_writes_only_the_positions_an_extended_history_adds():
    asked = []
    memory, make = PromptMemory(), prefix_generator(asked)
    users = t([1, 2])

    def write(item_seq, mask):
        return memory.generator(make, users)(item_seq, torch.zeros_like(item_seq), mask, 2)

    def direct(item_seq, mask):
        return prefix_generator([])(users)(item_seq, torch.zeros_like(item_seq), mask, 2)

    training = t([[1, 3, 5], [4, 2, 0]])
    assert torch.equal(write(training, training > 0), direct(training, training > 0))
    assert len(asked) == 5
    # Validation: the training sequence plus its last target, prompted at all but the last item.
    validation = t([[1, 3, 5, 7], [4, 2, 6, 0]])
    asked.clear()
    assert torch.equal(write(validation, all_but_last(validation)), direct(validation, all_but_last(validation)))
    assert asked == []
    # The test history adds one item: one new position per user.
    test = t([[1, 3, 5, 7, 8], [4, 2, 6, 9, 0]])
    expected = direct(test, all_but_last(test))
    asked.clear()
    assert torch.equal(write(test, all_but_last(test)), expected)
    assert asked == [(1, 3), (2, 2)]
    # Validation again, a prefix of the test history: nothing new, and the test's prompts kept.
    asked.clear()
    write(validation, all_but_last(validation))
    assert torch.equal(write(test, all_but_last(test)), expected)
    assert asked == []


def test_memory_reuses_nothing_after_a_changed_token_or_for_another_user():
    asked = []
    memory, make = PromptMemory(), prefix_generator(asked)
    first = t([[1, 3, 5, 7]])
    memory.generator(make, t([1]))(first, torch.zeros_like(first), first > 0, 1)
    asked.clear()
    changed = t([[1, 3, 6, 7]])
    prompts = memory.generator(make, t([1]))(changed, torch.zeros_like(changed), changed > 0, 1)
    assert asked == [(1, 2), (1, 3)]
    assert prompts.squeeze(-1).tolist() == [(1 + 1) % 9 + 1, (1 + 4) % 9 + 1, (1 + 10) % 9 + 1, (1 + 17) % 9 + 1]
    asked.clear()
    memory.generator(make, t([2]))(first, torch.zeros_like(first), first > 0, 1)
    assert asked == [(2, 0), (2, 1), (2, 2), (2, 3)]
    # Another segment at a position is another history from there on.
    asked.clear()
    segments = t([[0, 0, 1, 0]])
    memory.generator(make, t([2]))(first, segments, first > 0, 1)
    assert asked == [(2, 2), (2, 3)]
    memory.clear()
    assert len(memory) == 0


def test_memory_keeps_the_last_of_several_rows_of_one_user_in_a_batch():
    asked = []
    memory, make = PromptMemory(), prefix_generator(asked)
    batch = t([[1, 3, 5, 0], [1, 3, 5, 7]])  # two windows of user 4, the longer one last
    prompts = memory.generator(make, t([4, 4]))(batch, torch.zeros_like(batch), batch > 0, 1)
    assert torch.equal(prompts, prefix_generator([])(t([4, 4]))(batch, torch.zeros_like(batch), batch > 0, 1))
    asked.clear()
    test = t([[1, 3, 5, 7, 8]])
    memory.generator(make, t([4]))(test, torch.zeros_like(test), all_but_last(test), 1)
    assert asked == [] and len(memory) == 1
