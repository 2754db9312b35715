import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The paper datasets ship in the repository (dataset/README.md), so the tests that read them
# run everywhere.
DATASETS = REPO / "dataset"

# Small enough to train in seconds; MAX_ITEM_LIST_LENGTH 6 makes some users span windows.
TINY_DATA = {
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "MAX_ITEM_LIST_LENGTH": 6,
    "train_batch_size": 64,
    "eval_batch_size": 16,
    "topk": [5, 10],
    "epochs": 2,
    "show_progress": False,
}
TINY_RECGPT = {
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 2,
    "hidden_dropout_prob": 0.0,
    "attn_dropout_prob": 0.0,
    "stage1_n": 3,
    "prompt_length": 2,
    "finetune_epochs": 2,
}
TINY_CONFIG = {**TINY_DATA, **TINY_RECGPT}


def tiny_sequences(n_users=40, n_items=30):
    """User u walks the items u, u+1, u+2, ... (mod n_items) for 5..13 steps: a pattern a
    next-item model can learn, with histories both shorter and longer than one window."""
    sequences = {}
    for user in range(1, n_users + 1):
        length = 5 + user % 9
        sequences[str(user)] = [str((user + step) % n_items + 1) for step in range(length)]
    return sequences


def write_inter(data_path, name, sequences):
    folder = Path(data_path) / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, items in sequences.items():
        lines += [f"{user}\t{item}\t{position}" for position, item in enumerate(items)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session", autouse=True)
def work_in_tmp(tmp_path_factory):
    """RecBole writes log/, log_tensorboard/ and saved/ under the working directory."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("run"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="session")
def tiny_data_path(tmp_path_factory):
    data_path = tmp_path_factory.mktemp("data")
    write_inter(data_path, "tiny", tiny_sequences())
    return data_path


@pytest.fixture
def tiny_config(tiny_data_path, tmp_path):
    """``tiny_config(**overrides)`` -> RecBole Config for RecGPT on the tiny dataset."""
    from recbole_recgpt.config import create_config

    def make(model="RecGPT", **overrides):
        settings = {**(TINY_CONFIG if model == "RecGPT" else TINY_DATA), "data_path": str(tiny_data_path),
                    "checkpoint_dir": str(tmp_path / "saved")}
        return create_config(model, "tiny", config_dict={**settings, **overrides})

    return make
