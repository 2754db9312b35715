"""The compatibility fixes for RecBole 1.2.1 on current libraries."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import recbole_recgpt  # noqa: F401  (applies the patches)
import recbole.trainer.trainer as recbole_trainer_module


def test_pins_hold():
    assert int(np.__version__.split(".")[0]) < 2
    assert int(pd.__version__.split(".")[0]) < 3
    import pkg_resources  # noqa: F401  (ray needs it)


def test_recbole_config_builds():
    from recbole.config import Config

    config = Config(model="Pop", dataset="ml-100k", config_dict={"show_progress": False})
    assert config["model"] == "Pop"


@pytest.fixture
def recbole_checkpoint(tmp_path):
    from recbole.config import Config

    path = tmp_path / "checkpoint.pth"
    torch.save({"config": Config(model="Pop", dataset="ml-100k"), "state_dict": {}}, path, pickle_protocol=4)
    return path


def test_recbole_trainer_reads_its_own_checkpoints(recbole_checkpoint):
    assert recbole_trainer_module.torch.load(recbole_checkpoint)["config"]["model"] == "Pop"


def test_other_torch_loads_keep_the_safe_default(recbole_checkpoint):
    with pytest.raises(pickle.UnpicklingError):
        torch.load(recbole_checkpoint)


def test_recboles_directory_creation_tolerates_a_directory_another_process_just_made(tmp_path, monkeypatch):
    import recbole.utils.logger

    target = tmp_path / "log"
    # The race: the directory appears between RecBole's existence check and its makedirs.
    monkeypatch.setattr("os.path.exists", lambda path: False)
    target.mkdir()
    recbole.utils.logger.ensure_dir(str(target))
    recbole_trainer_module.ensure_dir(str(target))
    assert target.is_dir()


def test_metrics_over_the_catalogue_evaluate(tiny_config):
    """ItemCoverage and GiniIndex read the catalogue size RecBole's collector stores as an int."""
    from recbole_recgpt.quick_start import build

    config = tiny_config("SASRec", metrics=["Hit", "ItemCoverage", "GiniIndex"], valid_metric="Hit@10")
    _, (train_data, _, test_data), _, trainer = build(config)
    trainer.eval_collector.data_collect(train_data)  # as Trainer.fit does
    struct_size = train_data.dataset.item_num
    result = trainer.evaluate(test_data, load_best_model=False)
    # At most every item but padding is covered; some item is.
    assert 0 < result["itemcoverage@10"] <= (struct_size - 1) / struct_size
    assert 0 <= result["giniindex@10"] <= 1
