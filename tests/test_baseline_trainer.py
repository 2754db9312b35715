"""The opt-in whole-sequence trainer gives RecBole's baselines the same pairs and loss."""

import pytest
import torch

from recbole.data.interaction import Interaction

from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.model.length_groups import length_groups
from recbole_recgpt.quick_start import build
from recbole_recgpt.trainer.phased import PhasedTrainer
from recbole_recgpt.trainer.whole_sequence import WholeSequenceTrainer, length_grouped_scoring

NO_DROPOUT = {
    "SASRec": {"hidden_size": 16, "inner_size": 32, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0},
    "BERT4Rec": {"hidden_size": 16, "inner_size": 32, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0},
    "GRU4Rec": {"embedding_size": 16, "hidden_size": 16, "dropout_prob": 0.0},
}


def prefix_rows(config, train_data, model, negatives):
    """A whole-sequence batch and the same pairs as RecBole's padded prefix rows, both on the
    model's device (as RecBole's trainer moves each batch before its loss)."""
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, neg_sample_num=negatives, shuffle=False)))
    width = config["MAX_ITEM_LIST_LENGTH"]
    prefixes, lengths, targets, sampled = [], [], [], []
    for row, length in enumerate(batch[model.ITEM_SEQ_LEN].tolist()):
        for t in range(length):
            prefix = torch.zeros(width, dtype=torch.long)
            prefix[: t + 1] = batch[model.ITEM_SEQ][row, : t + 1]
            prefixes.append(prefix)
            lengths.append(t + 1)
            targets.append(batch["target_" + model.ITEM_SEQ][row, t])
            if negatives:
                sampled.append(batch[model.NEG_ITEM_ID][row, t, 0])
    rows = {
        model.ITEM_SEQ: torch.stack(prefixes), model.ITEM_SEQ_LEN: torch.tensor(lengths),
        model.POS_ITEM_ID: torch.stack(targets),
    }
    if negatives:
        rows[model.NEG_ITEM_ID] = torch.stack(sampled)
    return batch.to(config["device"]), Interaction(rows).to(config["device"])


@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec"])
@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_whole_sequence_loss_equals_the_mean_over_recboles_prefix_rows(tiny_config, model_name, loss_type):
    config = tiny_config(model_name, baseline_trainer="whole_sequence", loss_type=loss_type, **NO_DROPOUT[model_name])
    _, (train_data, _, _), model, trainer = build(config)
    batch, rows = prefix_rows(config, train_data, model, negatives=1 if loss_type == "BPR" else 0)
    model.train()
    expected = model.calculate_loss(rows)
    torch.testing.assert_close(trainer.whole_sequence_loss(batch), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec"])
def test_one_negative_bce_is_the_papers_loss_over_recboles_prefix_rows(tiny_config, model_name):
    config = tiny_config(
        model_name, baseline_trainer="whole_sequence", loss_type="BPR", one_negative_loss="bce", **NO_DROPOUT[model_name]
    )
    _, (train_data, _, _), model, trainer = build(config)
    batch, rows = prefix_rows(config, train_data, model, negatives=1)
    model.train()
    user = model.forward(rows[model.ITEM_SEQ], rows[model.ITEM_SEQ_LEN])  # [N, H], RecBole's rows
    pos = torch.sigmoid((user * model.item_embedding(rows[model.POS_ITEM_ID])).sum(-1))
    neg = torch.sigmoid((user * model.item_embedding(rows[model.NEG_ITEM_ID])).sum(-1))
    expected = -(torch.log(pos) + torch.log(1 - neg)).mean()
    torch.testing.assert_close(trainer.whole_sequence_loss(batch), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, model.calculate_loss(rows))  # not RecBole's BPR


@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec", "BERT4Rec"])
def test_length_grouped_evaluation_changes_no_score(tiny_config, monkeypatch, model_name):
    config = tiny_config(model_name, baseline_trainer="whole_sequence", **NO_DROPOUT[model_name])
    _, (_, _, test_data), model, trainer = build(config)
    model.eval()
    interaction = next(iter(test_data))[0].to(config["device"])
    assert len(length_groups(interaction[model.ITEM_SEQ_LEN], 12)) > 2
    whole = model.full_sort_predict(interaction)
    with length_grouped_scoring(model, tokens_per_group=12):
        grouped = model.full_sort_predict(interaction)
    torch.testing.assert_close(grouped, whole, rtol=1e-5, atol=1e-5)
    assert "full_sort_predict" not in vars(model)  # RecBole's method again outside
    trainer.EVAL_TOKENS_PER_GROUP = 12
    metrics = trainer.evaluate(test_data, load_best_model=False)
    monkeypatch.setattr(WholeSequenceTrainer, "_full_sort_batch_eval", PhasedTrainer._full_sort_batch_eval)
    assert trainer.evaluate(test_data, load_best_model=False) == metrics


BERT4REC = {"hidden_size": 16, "inner_size": 32, "mask_ratio": 0.5}


def test_bert4rec_rows_are_whole_sequences_masked_by_recboles_rule(tiny_config, monkeypatch):
    config = tiny_config("BERT4Rec", baseline_trainer="whole_sequence", **BERT4REC)
    _, (train_data, _, _), model, trainer = build(config)
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, shuffle=False))).to(config["device"])
    whole = trainer.whole_sequences(batch)
    width = config["MAX_ITEM_LIST_LENGTH"]
    assert whole.size(1) <= width
    for row, length in enumerate(batch[model.ITEM_SEQ_LEN].tolist()):
        sequence = batch[model.ITEM_SEQ][row, :length].tolist() + [int(batch["target_" + model.ITEM_SEQ][row, length - 1])]
        latest = sequence[-width:]
        assert whole[row].tolist() == latest + [0] * (whole.size(1) - len(latest))
    slots = int(0.5 * config["MAX_ITEM_LIST_LENGTH"])
    monkeypatch.setattr("random.random", lambda: 1.0)  # cloze masking, never "mask the last item"
    cloze = trainer.cloze_batch(batch)
    masked, index, items = cloze[model.MASK_ITEM_SEQ], cloze[model.MASK_INDEX], cloze[model.POS_ITEMS]
    assert index.shape[1] == slots
    for row in range(len(whole)):
        positions = (masked[row] == model.mask_token).nonzero().flatten().tolist()
        assert len(positions) <= slots
        kept = [(p, i) for p, i in zip(index[row].tolist(), items[row].tolist()) if i > 0]
        assert kept == [(p, int(whole[row, p])) for p in positions]  # right-aligned, in order
        unmasked = [p for p in range(whole.size(1)) if p not in positions]
        assert masked[row, unmasked].tolist() == whole[row, unmasked].tolist()
    monkeypatch.setattr("random.random", lambda: 0.0)  # "mask the last item" batches
    cloze = trainer.cloze_batch(batch)
    lengths = (whole > 0).sum(1)
    assert cloze[model.MASK_INDEX][:, -1].tolist() == (lengths - 1).tolist()
    assert (cloze[model.MASK_ITEM_SEQ] == model.mask_token).sum(1).tolist() == [1] * len(whole)


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_bert4rec_loss_is_recboles_on_the_same_masked_rows(tiny_config, monkeypatch, loss_type):
    config = tiny_config("BERT4Rec", baseline_trainer="whole_sequence", loss_type=loss_type, hidden_dropout_prob=0.0,
                         attn_dropout_prob=0.0, **BERT4REC)
    _, (train_data, _, _), model, trainer = build(config)
    model.output_bias.data.normal_()  # trained, it is not the zeros it starts at
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, neg_sample_num=int(loss_type == "BPR"))))
    batch = batch.to(config["device"])
    monkeypatch.setattr("random.random", lambda: 1.0)  # cloze masking, never "mask the last item"
    torch.manual_seed(0)
    cloze = trainer.cloze_batch(batch)
    assert ((cloze[model.MASK_INDEX] > 0).sum(1) < cloze[model.MASK_INDEX].size(1)).any()  # some slots empty
    expected = model.calculate_loss(cloze)
    torch.manual_seed(0)
    torch.testing.assert_close(trainer.cloze_loss(batch), expected, rtol=1e-5, atol=1e-6)


def test_bert4rec_trains_with_the_whole_sequence_trainer(tiny_config, tiny_data_path, tmp_path):
    from recbole_recgpt.quick_start import run_recgpt
    from tests.conftest import TINY_DATA

    settings = {**TINY_DATA, **BERT4REC, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path),
                "baseline_trainer": "whole_sequence"}
    result = run_recgpt("BERT4Rec", "tiny", config_dict=settings)
    assert result["phases"]["train"]["epochs"] == TINY_DATA["epochs"]
    assert 0 < result["test_result"]["hit@10"] <= 1


def test_whole_sequence_trainer_runs_and_is_named_in_the_result(tiny_config, tiny_data_path, tmp_path):
    from recbole_recgpt.quick_start import run_recgpt
    from tests.conftest import TINY_DATA

    settings = dict(TINY_DATA)
    settings.update(NO_DROPOUT["SASRec"], data_path=str(tiny_data_path), checkpoint_dir=str(tmp_path),
                    baseline_trainer="whole_sequence")
    result = run_recgpt("SASRec", "tiny", config_dict=settings)
    assert result["config"]["baseline_trainer"] == "whole_sequence"
    assert result["phases"]["train"]["epochs"] == TINY_DATA["epochs"]
    assert 0 < result["test_result"]["hit@10"] <= 1


@pytest.mark.parametrize(
    "model, settings, trainer",
    [
        ("SASRec", {}, "whole_sequence"),
        ("SASRec", {"loss_type": "BPR"}, "whole_sequence"),
        ("GRU4Rec", {}, "whole_sequence"),
        ("BERT4Rec", {}, "whole_sequence"),
        ("SASRec", {"baseline_trainer": "recbole"}, "recbole"),  # one flag away
        ("Caser", {}, "recbole"),  # a model it cannot feed
        ("Pop", {}, "recbole"),
        ("RecGPT", {}, "recbole"),  # its own trainer ignores the key; stored RecGPT records say recbole
    ],
)
def test_auto_picks_the_whole_sequence_trainer_where_it_can_and_the_config_names_the_choice(
    tiny_config, model, settings, trainer
):
    from recbole_recgpt.quick_start import trainer_class

    config = tiny_config(model, **settings)
    assert config["baseline_trainer"] == trainer
    if model != "RecGPT":
        assert (trainer_class(config) is WholeSequenceTrainer) == (trainer == "whole_sequence")


def test_models_it_cannot_feed_are_refused_when_the_config_is_made(tiny_config):
    with pytest.raises(ConfigError, match="supports SASRec, GRU4Rec, BERT4Rec with loss_type CE or BPR, not Caser"):
        tiny_config("Caser", baseline_trainer="whole_sequence")
