"""Whole-sequence training data: the same (prefix, next item) pairs as RecBole's rows."""

from collections import Counter

import numpy as np
import pytest
import torch

from recbole_recgpt.data import UserSequenceDataLoader, split_windows, user_training_sequences
from recbole_recgpt.quick_start import build
from tests.conftest import tiny_sequences


@pytest.fixture
def tiny_train(tiny_config):
    config = tiny_config()
    dataset, (train_data, _, _), _, _ = build(config)
    return config, dataset, train_data.dataset


def test_training_sequences_are_each_users_history_without_valid_and_test_items(tiny_train):
    _, dataset, train = tiny_train
    users, sequences = user_training_sequences(train)
    raw = tiny_sequences()
    assert len(users) == len(raw)
    for user, sequence in zip(users, sequences):
        token = dataset.id2token(dataset.uid_field, user)
        expected = dataset.token2id(dataset.iid_field, raw[token][:-2])
        assert sequence.tolist() == list(expected)


@pytest.mark.parametrize("length", [1, 2, 5, 6, 7, 11, 12, 13, 40])
def test_windows_make_every_item_after_the_first_a_target_exactly_once(length):
    sequence = np.arange(1, length + 1)
    windows = split_windows(sequence, 6)
    targets = [item for window in windows for item in window[1:]]
    assert targets == list(range(2, length + 1))
    assert all(len(window) <= 6 for window in windows)


def test_batches_hold_exactly_recboles_prefix_target_pairs(tiny_train):
    """For a user whose training sequence fits one window, the (prefix, next item) pairs
    of one causal pass are exactly RecBole's augmented rows for that user; over all users
    an epoch covers as many pairs as RecBole has rows."""
    config, _, train = tiny_train
    loader = UserSequenceDataLoader(config, train)
    ours = Counter()
    for batch in loader:
        inputs, targets = batch[train.item_id_list_field], batch["target_" + train.item_id_list_field]
        users = batch[train.uid_field].tolist()
        for row, length in enumerate(batch[train.item_list_length_field].tolist()):
            for t in range(length):
                ours[(users[row], tuple(inputs[row, : t + 1].tolist()), int(targets[row, t]))] += 1
    feat = train.inter_feat
    recbole = Counter(
        (int(user), tuple(items[:length].tolist()), int(target))
        for user, items, length, target in zip(
            feat[train.uid_field], feat[train.item_id_list_field], feat[train.item_list_length_field],
            feat[train.iid_field],
        )
    )
    users, sequences = user_training_sequences(train)
    one_window = {int(u) for u, s in zip(users, sequences) if len(s) <= config["MAX_ITEM_LIST_LENGTH"] + 1}
    assert 0 < len(one_window) < len(users)
    assert sum(ours.values()) == sum(recbole.values()) == loader.pair_count
    assert {k: n for k, n in ours.items() if k[0] in one_window} == {
        k: n for k, n in recbole.items() if k[0] in one_window
    }


def test_batches_are_length_bucketed_and_bounded_by_pairs(tiny_train):
    config, _, train = tiny_train
    loader = UserSequenceDataLoader(config, train)
    for batch in loader:
        lengths = batch[train.item_list_length_field]
        assert batch[train.item_id_list_field].shape[1] == int(lengths.max())
        assert int(lengths.sum()) - int(lengths[-1]) < config["train_batch_size"]


def test_negatives_are_items_the_user_never_trained_on(tiny_train):
    config, _, train = tiny_train
    loader = UserSequenceDataLoader(config, train, neg_sample_num=3)
    users, sequences = user_training_sequences(train)
    seen = {int(u): set(s.tolist()) for u, s in zip(users, sequences)}
    checked = 0
    for batch in loader:
        negatives = batch["neg_" + train.iid_field]
        assert negatives.shape[-1] == 3
        assert int(negatives.min()) >= 1 and int(negatives.max()) < train.item_num
        for row, user in enumerate(batch[train.uid_field].tolist()):
            assert not seen[user] & set(negatives[row].flatten().tolist())
            checked += 1
    assert checked == len(loader.row_user) > len(users)


def test_same_seed_same_batches(tiny_train):
    config, _, train = tiny_train
    loader = UserSequenceDataLoader(config, train, neg_sample_num=1)
    torch.manual_seed(7)
    first = [b["neg_" + train.iid_field].clone() for b in loader]
    torch.manual_seed(7)
    second = [b["neg_" + train.iid_field].clone() for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("model", ["SASRec", "RecGPT"])
def test_masked_evaluation_never_ranks_a_history_item(tiny_config, monkeypatch, model):
    config = tiny_config(model, eval_mask_history=True)
    _, (_, _, test_data), _, trainer = build(config)
    seen = []
    collect = trainer.eval_collector.eval_batch_collect
    monkeypatch.setattr(
        trainer.eval_collector, "eval_batch_collect",
        lambda ranked, interaction, *rest: seen.append((ranked, interaction)) or collect(ranked, interaction, *rest),
    )
    # Ranking metrics: evaluation hands over top-k lists. None holds a history item (30 items,
    # histories of at most 6: every list fills with others).
    trainer.evaluate(test_data, load_best_model=False)
    lists, seen[:] = list(seen), []
    history = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    for top, interaction in lists:
        assert top.indices.size(1) == 10
        seq = interaction[history].to(top.indices.device)  # the loader's batch may be on the CPU
        assert not (top.indices.unsqueeze(2) == seq.unsqueeze(1)).any()
    # Metrics that read every score get scores, with the history at -inf.
    trainer.eval_collector.reads_top_k_only = False
    trainer.evaluate(test_data, load_best_model=False)
    masked = 0
    for scores, interaction in seen:
        seq = interaction[history].to(scores.device)
        assert torch.isinf(scores.gather(1, seq)).all()
        # Every item outside the history is still ranked (padding id 0 never is).
        distinct = torch.tensor([len(set(row.tolist()) - {0}) for row in seq])
        assert torch.isfinite(scores).sum(1).tolist() == (scores.size(1) - 1 - distinct).tolist()
        masked += int(distinct.sum())
    assert masked > 100


def test_unmasked_evaluation_is_recboles(tiny_config):
    config = tiny_config("SASRec")
    _, (_, valid_data, _), _, _ = build(config)
    assert type(valid_data).__name__ == "FullSortEvalDataLoader"
    assert next(iter(valid_data))[1] is None


def test_one_protocol_object_decides_what_evaluation_and_recommendation_skip(tiny_config):
    from recbole_recgpt.data import HistoryMaskingEvalDataLoader
    from recbole_recgpt.protocol import EvaluationProtocol

    history = torch.tensor([[3, 5, 0]])
    masked = EvaluationProtocol.from_config(tiny_config("SASRec", eval_mask_history=True))
    assert masked == EvaluationProtocol(mask_history=True) and torch.equal(masked.excluded(history), history)
    assert masked.evaluation_loader_class(tiny_config("SASRec", eval_mask_history=True), "valid") is HistoryMaskingEvalDataLoader
    plain = EvaluationProtocol.from_config(tiny_config("SASRec"))
    assert plain.excluded(history) is None
    assert plain.evaluation_loader_class(tiny_config("SASRec"), "valid") is not HistoryMaskingEvalDataLoader
