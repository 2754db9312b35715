"""RecGPT model: causality, one-pass exactness, learning, save and reload."""

import pytest
import torch

from recbole.data.interaction import Interaction

from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.model.recgpt import item_positions, required_positions
from recbole_recgpt.protocol import EvaluationProtocol
from recbole_recgpt.quick_start import build, load_data_and_model, run_recgpt
from tests.conftest import TINY_CONFIG


def scores_at(model):
    """The model's next-item scores at an index of each row: ``[B, n_items]``."""
    state_at = model._states_at(None)
    return lambda item_seq, segment_ids, index: model.gpt.item_scores(state_at(item_seq, segment_ids, index))


@pytest.fixture
def tiny(tiny_config):
    """``tiny(**overrides)`` -> (config, (train, valid, test) loaders, model)."""

    def make(**overrides):
        config = tiny_config(**overrides)
        _, loaders, model, _ = build(config)
        return config, loaders, model

    return make


def test_changing_a_later_item_never_changes_an_earlier_hidden_state(tiny):
    _, _, model = tiny(hidden_dropout_prob=0.1, attn_dropout_prob=0.1)
    model.eval()
    seq = torch.tensor([[3, 7, 2, 9, 4, 5]])
    changed = seq.clone()
    changed[0, 4] = 11
    before, after = model.forward(seq), model.forward(changed)
    torch.testing.assert_close(before[:, :4], after[:, :4], rtol=0, atol=0)
    assert not torch.allclose(before[:, 4], after[:, 4])


def test_one_causal_pass_equals_recbole_prefix_rows(tiny):
    """The hidden state at position t of a whole-sequence pass is what a RecBole row with
    the prefix i_1..i_t (right-padded to MAX_ITEM_LIST_LENGTH) gives."""
    config, (train_data, _, _), model = tiny()
    model.eval()
    loader = UserSequenceDataLoader(config, train_data.dataset, shuffle=False)
    batch = next(iter(loader))
    whole = model.forward(batch[model.ITEM_SEQ])
    width = TINY_CONFIG["MAX_ITEM_LIST_LENGTH"]
    compared = 0
    for row, length in enumerate(batch[model.ITEM_SEQ_LEN].tolist()):
        for t in range(length):
            prefix = torch.zeros(1, width, dtype=torch.long)
            prefix[0, : t + 1] = batch[model.ITEM_SEQ][row, : t + 1]
            alone = model.forward(prefix)[0, t]
            torch.testing.assert_close(whole[row, t], alone, rtol=1e-5, atol=1e-5)
            compared += 1
    assert compared > 20


def overfit(model, batch, steps=150):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_pretraining_loss_falls_on_a_tiny_set(tiny):
    config, (train_data, _, _), model = tiny()
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, neg_sample_num=1)))
    losses = overfit(model, batch)
    assert losses[-1] < 0.3 * losses[0]


def test_softmax_pretraining_equals_the_mean_cross_entropy_of_every_next_item(tiny):
    config, (train_data, _, _), model = tiny(pretrain_loss="ce")
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, shuffle=False)))
    model.eval()
    item_seq, targets = batch[model.ITEM_SEQ], batch[model.TARGET_SEQ]
    scores = model.gpt.item_scores(model.forward(item_seq))
    expected = torch.nn.functional.cross_entropy(scores[targets > 0], targets[targets > 0])
    torch.testing.assert_close(model.calculate_loss(batch), expected)
    model.train()
    losses = overfit(model, batch)
    assert losses[-1] < 0.3 * losses[0]


def test_prompt_tuning_loss_falls_on_a_tiny_set(tiny):
    config, (train_data, _, _), model = tiny()
    model.start_prompt_tuning()
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset)))
    losses = overfit(model, batch)
    assert losses[-1] < 0.3 * losses[0]


def test_prompt_writer_stays_frozen_while_tuning(tiny):
    config, (train_data, _, _), model = tiny()
    model.start_prompt_tuning()
    writer_before = {k: v.clone() for k, v in model.prompt_writer.state_dict().items()}
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset)))
    overfit(model, batch, steps=5)
    for key, value in model.prompt_writer.state_dict().items():
        torch.testing.assert_close(value, writer_before[key], rtol=0, atol=0)
    assert not torch.equal(model.gpt.item_embedding.weight, model.prompt_writer.item_embedding.weight)


@pytest.mark.parametrize("stage2_extension", [None, 3])
def test_full_sort_scores_are_exactly_the_two_stage_list(tiny, stage2_extension):
    _, (_, _, test_data), model = tiny(stage2_extension=stage2_extension)
    model.start_prompt_tuning()
    model.eval()
    interaction = next(iter(test_data))[0]
    scores = model.full_sort_predict(interaction)
    scores[:, 0] = -torch.inf
    n = model.stage1_n
    # Recompute both stages by hand from the same prompted history.
    seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    seq = seq[:, : int(lengths.max())]
    batch = model.prompt_builder.for_inference(model._generator(None), seq, lengths)
    score_at = scores_at(model)
    stage1 = score_at(batch.item_seq, batch.segment_ids, batch.last_item_index)
    stage1[:, 0] = -torch.inf
    stage1_items = stage1.topk(n, dim=1).indices
    ranked = scores.topk(10, dim=1).indices
    assert torch.equal(ranked[:, :n], stage1_items)
    extended, segments, end = model.two_stage_recall.extend_with(batch, stage1_items)
    appended = stage1_items[:, : stage2_extension or model.prompt_length]
    assert torch.equal(extended.gather(1, end.unsqueeze(1) - torch.arange(appended.size(1) - 1, -1, -1)), appended)
    if stage2_extension:  # the longest histories give up their oldest items to fit the table
        assert (batch.last_item_index + stage2_extension >= model.n_positions).any()
        assert extended.size(1) <= model.n_positions
    stage2 = score_at(extended, segments, end)
    stage2[:, 0] = -torch.inf
    stage2.scatter_(1, stage1_items, -torch.inf)
    assert torch.equal(ranked[:, n:], stage2.topk(10 - n, dim=1).indices)


@pytest.mark.parametrize("overrides", [{}, {"prompt_positions": "item"}, {"user_embedding": True}])
def test_stage2_continues_stage1s_pass_with_the_states_of_a_whole_pass(tiny, overrides):
    _, (_, _, test_data), model = tiny(**overrides)
    model.start_prompt_tuning()
    model.eval()
    interaction = next(iter(test_data))[0]
    users, lengths = interaction[model.USER_ID], interaction[model.ITEM_SEQ_LEN]
    seq = interaction[model.ITEM_SEQ][:, : int(lengths.max())]
    batch = model.prompt_builder.for_inference(model._generator(users), seq, lengths)
    stage1_items = torch.arange(1, 4).repeat(seq.size(0), 1)
    extended, segments, end = model.two_stage_recall.extend_with(batch, stage1_items)
    whole = model.gather_indexes(model.forward(extended, segments, users), end)
    states = model._states_at(users)
    # Stage 1 runs the last layer for the ranked position alone: the state a whole pass gives there.
    torch.testing.assert_close(
        states(batch.item_seq, batch.segment_ids, batch.last_item_index),
        model.gather_indexes(model.forward(batch.item_seq, batch.segment_ids, users), batch.last_item_index),
        rtol=1e-5, atol=1e-5,
    )
    # Two tokens (prompt_length 2) appended after every row's last real item: only they are computed.
    assert states._appended(extended, segments, end) == 2
    torch.testing.assert_close(states(extended, segments, end), whole, rtol=1e-5, atol=1e-5)
    # A changed earlier token makes it a new sequence: a pass of its own.
    changed = extended.clone()
    changed[:, 0] = 5
    assert states._appended(changed, segments, end) == 0
    torch.testing.assert_close(
        states(changed, segments, end), model.gather_indexes(model.forward(changed, segments, users), end),
        rtol=1e-5, atol=1e-5,
    )


def test_with_item_positions_an_extension_as_long_as_the_table_keeps_the_whole_history(tiny):
    # Item positions need only MAX_ITEM_LIST_LENGTH = 6 positions; stage 2 appends 6 items.
    _, (_, _, test_data), model = tiny(prompt_positions="item", stage1_n=6, stage2_extension=6)
    model.start_prompt_tuning()
    model.eval()
    assert model.n_positions == 6
    interaction = next(iter(test_data))[0]
    seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    seq = seq[:, : int(lengths.max())]
    batch = model.prompt_builder.for_inference(model._generator(None), seq, lengths)
    stage1_items = torch.arange(1, 7).repeat(seq.size(0), 1)
    extended, segments, end = model.two_stage_recall.extend_with(batch, stage1_items)
    real = (batch.segment_ids == 0) & (batch.item_seq > 0)
    assert torch.equal(extended[:, : real.size(1)][real], batch.item_seq[real])  # nothing dropped or shifted
    positions = item_positions(extended, segments)
    assert torch.equal(positions.gather(1, end.unsqueeze(1)).squeeze(1), lengths - 1)
    assert torch.isfinite(model.full_sort_predict(interaction)[:, 1:]).all()


@pytest.mark.parametrize("two_stage", [True, False])
def test_masked_history_is_never_ranked_and_stage1_fills_n_other_items(tiny, two_stage):
    _, (_, _, test_data), model = tiny(eval_mask_history=True, two_stage=two_stage)
    model.start_prompt_tuning()
    model.eval()
    interaction = next(iter(test_data))[0]
    scores = model.full_sort_predict(interaction)
    seq = interaction[model.ITEM_SEQ]
    assert torch.isinf(scores.gather(1, seq)).all()
    ranked = scores.topk(model.stage1_n, dim=1).indices
    assert not (ranked.unsqueeze(2) == seq.unsqueeze(1)).any()
    if not two_stage:  # single-stage: the unmasked scores, history items aside
        model.protocol = EvaluationProtocol(mask_history=False)
        unmasked = model.full_sort_predict(interaction)
        unmasked.scatter_(1, seq, -torch.inf)
        torch.testing.assert_close(scores, unmasked, rtol=0, atol=0)


def test_predict_agrees_with_full_sort(tiny):
    _, (_, _, test_data), model = tiny()
    model.eval()
    interaction = next(iter(test_data))[0]
    full = model.full_sort_predict(interaction)
    items = torch.arange(len(interaction)) % (model.n_items - 1) + 1
    with_items = Interaction({**interaction.interaction, model.ITEM_ID: items})
    torch.testing.assert_close(model.predict(with_items), full[torch.arange(len(items)), items])


def test_a_saved_model_reloads_with_identical_scores(tiny_data_path, tmp_path):
    settings = {**TINY_CONFIG, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path)}
    result = run_recgpt("RecGPT", "tiny", config_dict=settings)
    _, model, _, _, _, test_data = load_data_and_model(result.checkpoint)
    assert bool(model.prompt_tuned)
    model.eval()
    interaction = next(iter(test_data))[0]
    first = model.full_sort_predict(interaction)
    _, again, _, _, _, _ = load_data_and_model(result.checkpoint)
    again.eval()
    torch.testing.assert_close(again.full_sort_predict(interaction), first, rtol=0, atol=0)
    # The reloaded model reproduces the test metrics of the run that saved it.
    assert result.test_result == pytest.approx(reevaluate(result.checkpoint))
    # Its record's per-user hit ranks give those test metrics back, user by user averaged.
    users, per_user = result.per_user_test(10)
    assert len(users) == len(test_data.dataset) and list(users) == sorted(users)
    for metric, values in per_user.items():
        assert values.mean() == pytest.approx(result.test_result[metric], abs=1e-4)


def reevaluate(checkpoint):
    from recbole_recgpt.utils import get_trainer

    config, model, _, _, _, test_data = load_data_and_model(checkpoint)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return dict(trainer.evaluate(test_data, load_best_model=False))


def test_prompts_written_once_equal_prompts_written_per_batch(tiny):
    config, (train_data, _, _), model = tiny()
    model.start_prompt_tuning()
    model.eval()
    loader = UserSequenceDataLoader(config, train_data.dataset, shuffle=False)
    per_batch = list(loader)
    loader.write_prompts(model.prompted_training_batch)
    written_once = list(loader)
    assert len(per_batch) == len(written_once) > 1
    for plain, cached in zip(per_batch, written_once):
        model.prompt_memory.clear()  # written anew, not recalled
        fresh = model.prompted_training_batch(
            plain[model.ITEM_SEQ], plain[model.ITEM_SEQ_LEN], plain[model.TARGET_SEQ], plain[model.USER_ID]
        )
        width = cached[model.ITEM_SEQ].size(1)
        assert not fresh.item_seq[:, width:].any()
        assert torch.equal(fresh.item_seq[:, :width], cached[model.ITEM_SEQ])
        assert torch.equal(fresh.segment_ids[:, :width], cached[model.SEGMENT_SEQ])
        assert torch.equal(fresh.target_seq[:, :width], cached[model.TARGET_SEQ])
        torch.testing.assert_close(model.calculate_loss(plain), model.calculate_loss(cached))


@pytest.mark.parametrize("prompt_tuned", [False, True])
def test_length_grouped_scoring_changes_no_score(tiny, prompt_tuned):
    _, (_, _, test_data), model = tiny()
    if prompt_tuned:
        model.start_prompt_tuning()
    model.eval()
    interaction = next(iter(test_data))[0]
    model.EVAL_TOKENS_PER_GROUP = 12
    grouped = model.full_sort_predict(interaction)
    model.EVAL_TOKENS_PER_GROUP = 10**9
    whole = model.full_sort_predict(interaction)
    torch.testing.assert_close(grouped, whole, rtol=1e-5, atol=1e-5)


def test_length_groups_cover_every_row_once_within_the_budget():
    from recbole_recgpt.model.length_groups import length_groups

    lengths = torch.tensor([5, 1, 3, 3, 9, 2, 2, 7])
    groups = length_groups(lengths, 8)
    assert sorted(torch.cat(groups).tolist()) == list(range(8))
    for rows in groups:
        assert len(rows) == 1 or len(rows) * int(lengths[rows].max()) <= 8


def test_extra_padding_columns_change_no_loss(tiny):
    """Batches are trimmed to their longest row; padding them to the full history length,
    as RecBole's rows are, gives the same loss."""
    config, (train_data, _, _), model = tiny()
    model.eval()
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, neg_sample_num=1, shuffle=False)))
    extra = config["MAX_ITEM_LIST_LENGTH"] - batch[model.ITEM_SEQ].size(1)
    assert extra > 0
    padded = Interaction({
        key: torch.nn.functional.pad(value, (0, 0, 0, extra) if value.dim() == 3 else (0, extra)) if value.dim() > 1 else value
        for key, value in batch.interaction.items()
    })
    torch.testing.assert_close(model.calculate_loss(padded), model.calculate_loss(batch))
    model.start_prompt_tuning()
    torch.testing.assert_close(model.calculate_loss(padded), model.calculate_loss(batch))


def test_recboles_case_study_top_k_works(tiny):
    from recbole.utils.case_study import full_sort_topk

    _, (_, _, test_data), model = tiny()
    model.start_prompt_tuning()
    model.eval()
    users = test_data._dataset.inter_feat[model.USER_ID][:4].numpy()
    scores, items = full_sort_topk(users, model, test_data, k=5, device="cpu")
    assert items.shape == (4, 5) and (items > 0).all() and torch.isfinite(scores).all()


@pytest.mark.parametrize(
    "overrides, phases",
    [({"prompt_tuning": False}, {"pretrain"}), ({"two_stage": False}, {"pretrain", "finetune"})],
)
def test_ablations_are_a_config_change(tiny_data_path, tmp_path, overrides, phases):
    settings = {**TINY_CONFIG, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path), **overrides}
    result = run_recgpt("RecGPT", "tiny", config_dict=settings)
    assert set(result.phases) == phases
    _, model, _, _, _, test_data = load_data_and_model(result.checkpoint)
    model.eval()
    interaction = next(iter(test_data))[0]
    batch_len = interaction[model.ITEM_SEQ_LEN]
    seq = interaction[model.ITEM_SEQ][:, : int(batch_len.max())]
    if not overrides.get("two_stage", True):
        # Single stage: the scores are the prompted history's next-item scores, nothing merged
        # (padding, id 0, never ranked).
        batch = model.prompt_builder.for_inference(model._generator(None), seq, batch_len)
        expected = scores_at(model)(batch.item_seq, batch.segment_ids, batch.last_item_index)
        expected[:, 0] = -torch.inf
        torch.testing.assert_close(model.full_sort_predict(interaction), expected)
    else:
        assert not bool(model.prompt_tuned) and model.prompt_writer is None


def counting_positions(model, monkeypatch):
    """Counts the positions the model's prompt writer is asked to write: a list, one entry per call."""
    calls = []
    make_generator = model._generator

    def counting(user_ids):
        generator = make_generator(user_ids)

        def generate(item_seq, segment_ids, mask, k):
            calls.append(int(mask.sum()))
            return generator(item_seq, segment_ids, mask, k)

        return generate

    monkeypatch.setattr(model, "_generator", counting)
    return calls


def test_evaluation_prompts_are_written_once_per_history_and_forgotten_with_new_weights(tiny, monkeypatch):
    _, (_, _, test_data), model = tiny(user_embedding=True)
    model.start_prompt_tuning()
    model.eval()
    interaction = next(iter(test_data))[0]
    written = counting_positions(model, monkeypatch)
    first = model.full_sort_predict(interaction)
    # Every history position but the last (its prompts are never read) is written.
    assert sum(written) == int((interaction[model.ITEM_SEQ_LEN] - 1).sum())
    again = model.full_sort_predict(interaction)
    assert sum(written) == int((interaction[model.ITEM_SEQ_LEN] - 1).sum()), "the same histories must not be prompted twice"
    torch.testing.assert_close(again, first, rtol=0, atol=0)

    model.load_state_dict(model.state_dict())  # the same writer (the best checkpoint, reloaded) keeps them
    model.full_sort_predict(interaction)
    assert sum(written) == int((interaction[model.ITEM_SEQ_LEN] - 1).sum())

    state = model.state_dict()
    state["prompt_writer.item_embedding.weight"] = torch.randn_like(state["prompt_writer.item_embedding.weight"])
    model.load_state_dict(state)
    changed = model.full_sort_predict(interaction)
    assert sum(written) == 2 * int((interaction[model.ITEM_SEQ_LEN] - 1).sum())
    model.prompt_memory.clear()
    torch.testing.assert_close(model.full_sort_predict(interaction), changed, rtol=0, atol=0)


@pytest.mark.parametrize("max_length", [20, 6])
def test_after_the_training_prompts_validation_writes_nothing_and_the_test_one_position_per_user(
    tiny, monkeypatch, max_length
):
    config, (train_data, valid_data, test_data), model = tiny(user_embedding=True, MAX_ITEM_LIST_LENGTH=max_length)
    model.start_prompt_tuning()
    model.eval()
    UserSequenceDataLoader(config, train_data.dataset).write_prompts(model.prompted_training_batch)
    written = counting_positions(model, monkeypatch)
    valid, test = next(iter(valid_data))[0], next(iter(test_data))[0]
    recalled = model.full_sort_predict(valid), model.full_sort_predict(test)
    if max_length == 20:
        # Every history fits: each validation history extends a training sequence by its last
        # target, each test history a validation history by one item.
        assert sum(written) == len(test)
    else:
        # Longer histories are cut to their last 6 items: a window that moved shares no prefix.
        assert len(test) < sum(written) < int((valid[model.ITEM_SEQ_LEN] - 1).sum() + (test[model.ITEM_SEQ_LEN] - 1).sum())
    model.prompt_memory.clear()  # the same prompts, written anew
    for interaction, scores in zip((valid, test), recalled):
        torch.testing.assert_close(model.full_sort_predict(interaction), scores)


@pytest.mark.parametrize("prompt_mode", ["insert", "replace_tail"])
def test_prompts_can_exclude_the_history_so_far(tiny, prompt_mode):
    config, (train_data, _, _), model = tiny(prompt_exclude_history=True, prompt_mode=prompt_mode)
    model.start_prompt_tuning()
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, shuffle=False)))
    prompted = model.prompted_training_batch(
        batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], batch[model.TARGET_SEQ], batch[model.USER_ID]
    )
    checked = 0
    for tokens, segments in zip(prompted.item_seq.tolist(), prompted.segment_ids.tolist()):
        for position, (token, segment) in enumerate(zip(tokens, segments)):
            if segment == 1:
                history = [item for item, kind in zip(tokens[:position], segments[:position]) if kind == 0]
                assert token not in history
                checked += 1
    assert checked > 20


def test_item_positions_give_a_prompt_the_position_of_the_item_it_follows():
    item_seq = torch.tensor([[5, 9, 6, 8, 7, 0, 0], [3, 4, 0, 0, 0, 0, 0]])
    segments = torch.tensor([[0, 1, 0, 1, 0, 1, 0], [0, 0, 1, 1, 0, 0, 0]])
    assert item_positions(item_seq, segments).tolist() == [[0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1]]
    assert required_positions(50, 3, "insert", "item") == 50 < required_positions(50, 3, "insert", "sequence")


def test_item_positions_change_nothing_without_prompts(tiny):
    _, _, model = tiny(prompt_positions="item", n_positions=30)
    model.eval()
    seq = torch.tensor([[3, 7, 2, 9, 4, 0, 0]])
    by_item = model.forward(seq)
    model.prompt_positions = "sequence"
    # Real tokens only: padding never reaches a real token's hidden state (causal).
    torch.testing.assert_close(by_item[:, :5], model.forward(seq)[:, :5], rtol=0, atol=0)
    # With prompts, token 1 (a prompt) moves to position 0 and token 2 (real) to position 1.
    prompted = torch.tensor([[3, 7, 2, 9, 4, 0, 0]]), torch.tensor([[0, 1, 0, 1, 0, 0, 0]])
    by_sequence = model.forward(*prompted)
    model.prompt_positions = "item"
    by_item = model.forward(*prompted)
    torch.testing.assert_close(by_item[:, 0], by_sequence[:, 0], rtol=0, atol=0)
    assert not torch.allclose(by_item[:, 1], by_sequence[:, 1]) and not torch.allclose(by_item[:, 2], by_sequence[:, 2])
