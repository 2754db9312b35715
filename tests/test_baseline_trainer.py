"""The opt-in whole-sequence trainer gives RecBole's baselines the same pairs and loss."""

import pytest
import torch

from recbole.data.interaction import Interaction

from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.quick_start import build

NO_DROPOUT = {
    "SASRec": {"hidden_size": 16, "inner_size": 32, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0},
    "GRU4Rec": {"embedding_size": 16, "hidden_size": 16, "dropout_prob": 0.0},
}
@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec"])
def test_whole_sequence_loss_equals_the_mean_over_recboles_prefix_rows(tiny_config, model_name):
    config = tiny_config(model_name, baseline_trainer="whole_sequence", **NO_DROPOUT[model_name])
    _, (train_data, _, _), model, trainer = build(config)
    batch = next(iter(UserSequenceDataLoader(config, train_data.dataset, shuffle=False)))
    width = config["MAX_ITEM_LIST_LENGTH"]
    prefixes, lengths, targets = [], [], []
    for row, length in enumerate(batch[model.ITEM_SEQ_LEN].tolist()):
        for t in range(length):
            prefix = torch.zeros(width, dtype=torch.long)
            prefix[: t + 1] = batch[model.ITEM_SEQ][row, : t + 1]
            prefixes.append(prefix)
            lengths.append(t + 1)
            targets.append(batch["target_" + model.ITEM_SEQ][row, t])
    rows = Interaction({
        model.ITEM_SEQ: torch.stack(prefixes), model.ITEM_SEQ_LEN: torch.tensor(lengths),
        model.POS_ITEM_ID: torch.stack(targets),
    })
    model.train()
    torch.testing.assert_close(trainer.whole_sequence_loss(batch), model.calculate_loss(rows), rtol=1e-5, atol=1e-6)


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


def test_bidirectional_models_are_refused(tiny_config):
    config = tiny_config("BERT4Rec", baseline_trainer="whole_sequence")
    with pytest.raises(ConfigError, match="supports SASRec and GRU4Rec with loss_type CE, not BERT4Rec"):
        build(config)
