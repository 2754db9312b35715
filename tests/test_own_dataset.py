"""A dataset of your own, with no yaml: columns from the .inter header, histories in time order."""

import json
import logging
import random

from recbole_recgpt.cli import run_main
from recbole_recgpt.config import create_config
from recbole_recgpt.data import user_training_sequences
from recbole_recgpt.quick_start import build
from tests.conftest import TINY_CONFIG, tiny_sequences

# The tiny run's sizes, without the dataset settings a yaml would hold.
DATASET_KEYS = ("load_col", "USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD")
SIZES = {key: value for key, value in TINY_CONFIG.items() if key not in DATASET_KEYS}


def write_shuffled_inter(folder, name, header, sequences):
    """One line per interaction in random order, the time column giving the true order, plus
    a rating and a label nobody asked for."""
    rows = [
        f"{user}\t{item}\t{1_000_000 + 60 * step}\t{step % 5 + 1}\t{step % 2}"
        for user, items in sequences.items()
        for step, item in enumerate(items)
    ]
    random.Random(0).shuffle(rows)
    (folder / name).mkdir(parents=True)
    (folder / name / f"{name}.inter").write_text("\n".join([header, *rows]) + "\n")


def test_a_folder_with_only_an_inter_file_runs_and_says_what_it_assumed(tmp_path, caplog):
    header = "user_id:token\titem_id:token\ttimestamp:float\trating:float\tlabel:float"
    write_shuffled_inter(tmp_path, "mydata", header, tiny_sequences())
    args = ["--dataset=mydata", f"--data_path={tmp_path}", f"--checkpoint_dir={tmp_path / 'saved'}",
            f"--result_file={tmp_path / 'result.json'}", *(f"--{key}={value}" for key, value in SIZES.items())]
    with caplog.at_level(logging.INFO):
        run_main(args)
    result = json.loads((tmp_path / "result.json").read_text())
    assert set(result["phases"]) == {"pretrain", "finetune"}
    assert 0 < result["test_result"]["hit@10"] <= 1
    assert result["config"]["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    (note,) = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Dataset 'mydata'")]
    assert "ordered by timestamp" in note and "not loaded: rating, label" in note


def test_columns_with_other_names_are_set_by_key_and_histories_follow_the_time_column(tmp_path):
    sequences = tiny_sequences()
    header = "session:token\tproduct:token\ttime:float\tstars:float\tclicked:float"
    write_shuffled_inter(tmp_path, "shop", header, sequences)
    config = create_config("RecGPT", "shop", config_dict={
        **SIZES, "data_path": str(tmp_path), "checkpoint_dir": str(tmp_path / "saved"),
        "USER_ID_FIELD": "session", "ITEM_ID_FIELD": "product", "TIME_FIELD": "time",
    })
    dataset, (train_data, _, _), _, _ = build(config)
    assert config["load_col"] == {"inter": ["session", "product", "time"]}
    users, histories = user_training_sequences(train_data.dataset)
    assert len(users) == len(sequences)
    for user, history in zip(users, histories):
        items = sequences[dataset.id2token("session", user)]
        # Leave-one-out: the last two items (by time, not by line) are validation and test.
        assert list(dataset.id2token("product", history)) == items[:-2]
