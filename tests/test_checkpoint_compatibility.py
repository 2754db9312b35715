"""Checkpoints and resume files written by an earlier release still load: they pickle class
paths (RecBole's Config, the model and trainer modules), so moving a module must not break
them. The files in tests/fixtures/checkpoints-0.1.0/ were written by release 0.1.0
(tests/fixtures/make_checkpoints.py) from the tiny dataset of conftest.py."""

from pathlib import Path

import pytest

from recbole_recgpt.compat import load_checkpoint
from recbole_recgpt.quick_start import load_resume_state, resumed_config
from recbole_recgpt.recommend import recommend

RELEASE_0_1_0 = Path(__file__).resolve().parent / "fixtures" / "checkpoints-0.1.0"


def test_the_fixture_holds_both_models_files():
    assert sorted(p.name for p in RELEASE_0_1_0.glob("*.pth")) == [
        "RecGPT-tiny-finetune.pth", "RecGPT-tiny-pretrain.pth", "RecGPT-tiny-resume.pth",
        "SASRec-tiny-resume.pth", "SASRec-tiny-train.pth",
    ]


@pytest.mark.parametrize("name", ["RecGPT-tiny-finetune.pth", "RecGPT-tiny-pretrain.pth", "SASRec-tiny-train.pth"])
def test_a_checkpoint_of_release_0_1_0_loads_with_its_config_and_weights(name):
    checkpoint = load_checkpoint(RELEASE_0_1_0 / name)
    assert checkpoint["config"]["dataset"] == "tiny" and checkpoint["config"]["model"] == name.split("-")[0]
    assert any(key.endswith("item_embedding.weight") for key in checkpoint["state_dict"])


@pytest.mark.parametrize("name, model", [("RecGPT-tiny-finetune.pth", "RecGPT"), ("SASRec-tiny-train.pth", "SASRec")])
def test_a_checkpoint_of_release_0_1_0_recommends(name, model, tiny_data_path):
    rows = recommend(str(RELEASE_0_1_0 / name), users=["1", "2"], k=3, data_path=str(tiny_data_path))
    assert [(row["user"], [rank for rank, _ in enumerate(row["items"], 1)]) for row in rows] == [("1", [1, 2, 3]), ("2", [1, 2, 3])]
    assert all(len(set(row["items"])) == 3 for row in rows)


@pytest.mark.parametrize("name, phases", [("RecGPT-tiny-resume.pth", ["pretrain", "finetune"]),
                                          ("SASRec-tiny-resume.pth", ["train"])])
def test_a_resume_file_of_release_0_1_0_gives_back_its_run(name, phases):
    state = load_resume_state(str(RELEASE_0_1_0 / name))
    config = resumed_config(state)
    assert config["dataset"] == "tiny" and config["epochs"] == 1
    assert (state["phase"], state["phase_done"], list(state["phases"])) == (phases[-1], True, phases)
