"""Bad input gets one line naming the problem and the fix: no traceback, exit status 2."""

import os
import subprocess
import sys

import pytest
import torch

from recbole_recgpt.cli import run_main
from tests.conftest import REPO, TINY_CONFIG, TINY_DATA, tiny_sequences, write_inter

TINY_ARGS = [f"--{key}={value}" for key, value in TINY_CONFIG.items()]


def fails_with(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        run_main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err, err
    return err


@pytest.fixture
def tiny_args(tiny_data_path, tmp_path):
    return ["--dataset=tiny", f"--data_path={tiny_data_path}", f"--checkpoint_dir={tmp_path}", *TINY_ARGS]


def with_args(args, **changes):
    """``args`` with ``--key=value`` replaced (or added) for each change."""
    kept = [a for a in args if a.split("=", 1)[0][2:] not in changes]
    return kept + [f"--{key}={value}" for key, value in changes.items()]


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"prompt_length": -1}, "prompt_length=-1 must be an integer >= 0"),
        ({"prompt_length": 3, "n_positions": 12}, "n_positions=12 is too small"),
        ({"stage1_n": 0}, "stage1_n=0 must be between 1 and the largest topk (10)"),
        ({"stage1_n": 11}, "stage1_n=11 must be between 1 and the largest topk (10)"),
        ({"prompt_length": 4, "stage1_n": 3}, "prompt_length=4 exceeds stage1_n=3"),
        ({"stage2_extension": 4, "stage1_n": 3}, "stage2_extension=4 exceeds stage1_n=3"),
        ({"stage2_extension": -1}, "stage2_extension=-1 must be an integer >= 0 or ~"),
        ({"prompt_mode": "append"}, "prompt_mode='append' is unknown; use one of insert, replace_tail"),
        ({"prompt_generator": "teacher"}, "prompt_generator='teacher' is unknown"),
        ({"learning_rate": 0}, "learning_rate=0 must be a number > 0"),
        ({"finetune_learning_rate": -0.1}, "finetune_learning_rate=-0.1 must be a number > 0"),
        ({"epochs": -1}, "epochs=-1 must be an integer >= 0"),
        ({"finetune_epochs": 1.5}, "finetune_epochs=1.5 must be an integer >= 0"),
        ({"train_batch_size": 0}, "train_batch_size=0 must be an integer >= 1"),
        ({"MAX_ITEM_LIST_LENGTH": 0}, "MAX_ITEM_LIST_LENGTH=0 must be an integer >= 1"),
        ({"valid_metric": "NDCG@50"}, "valid_metric=NDCG@50 is not computed by validation (metrics and topk give hit@5, "
         "hit@10, ndcg@5, ndcg@10); choose one of those, or add its metric to metrics and its cut-off to topk"),
        ({"metrics": "Foo"}, "metrics: RecBole has no metric named 'Foo'; use names among auc, "),
        ({"metrics": "AUC"}, "metrics: auc, logloss, mae and rmse score labelled pairs, which a full ranking does not have"),
        ({"hidden_size": 30, "n_heads": 4}, "hidden_size=30 is not divisible by n_heads=4"),
        ({"n_heads": 0}, "n_heads=0 must be an integer >= 1"),
        ({"hidden_size": 0}, "hidden_size=0 must be an integer >= 1"),  # would train to chance level, silently
        ({"n_layers": 0}, "n_layers=0 must be an integer >= 1"),
        ({"attn_dropout_prob": 1.0}, "attn_dropout_prob=1.0 must be a probability >= 0 and < 1"),
        ({"hidden_act": "elu"}, "hidden_act='elu' is unknown; use one of gelu, relu, swish, tanh, sigmoid"),
        ({"promt_length": 2}, "unknown parameter 'promt_length' in the command line; did you mean 'prompt_length'?"),
        ({"loss_type": "CE"}, "unknown parameter 'loss_type'"),
        ({"model": "SASRek"}, "unknown model 'SASRek'"),
        ({"pretrained_checkpoint": "/no/such.pth"}, "pretrained_checkpoint /no/such.pth does not exist"),
        ({"eval_mask_history": "maybe"}, "eval_mask_history='maybe' must be True or False"),
        (
            {"eval_mask_history": True, "eval_args": "{'split':{'LS':'valid_and_test'},'order':'TO','mode':'uni100'}"},
            "sampled evaluation (eval_args mode uni100) has no such ranking",
        ),
    ],
)
def test_impossible_parameters(capsys, tiny_args, changes, expected):
    fails_with(capsys, with_args(tiny_args, **changes), expected)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"topk": "[5,10,31]"}, "topk=31 is more than the 30 items of dataset 'tiny'; set topk to at most 30"),
        ({"prompt_length": 31, "two_stage": False}, "prompt_length=31 is more than the 30 items of dataset 'tiny'"),
    ],
)
def test_lists_longer_than_the_catalogue(capsys, tiny_args, changes, expected):
    fails_with(capsys, with_args(tiny_args, **changes), expected)


def test_unknown_dataset_without_a_local_folder(capsys, tmp_path):
    fails_with(capsys, ["--dataset=nosuch", f"--data_path={tmp_path}"], "dataset 'nosuch' not found")


def test_missing_data_folder(capsys):
    fails_with(capsys, ["--dataset=tiny", "--data_path=/no/such/folder"], "data folder /no/such/folder does not exist")


def test_unreadable_inter_file(capsys, tiny_args, monkeypatch):
    # Tests run as root here, for whom permission bits do not deny reading.
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).endswith(".inter"))
    fails_with(capsys, tiny_args, "tiny.inter is not readable")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "is empty"),
        ("user_id:token\titem_id:token\ttimestamp:float\n", "has a header but no interactions"),
        ("user_id:token\titem_id:token\n1\t2\n", "set TIME_FIELD to the name of your time column"),
        ("user:token\titem_id:token\ttimestamp:float\n1\t2\t0\n", "has no 'user_id' column (USER_ID_FIELD"),
        ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t0\n1\t3\tyesterday\n", "line 3: timestamp 'yesterday'"),
        ("user_id:token\titem_id:token\ttimestamp:token\n1\t2\t0\n", "declare it 'timestamp:float'"),
    ],
)
def test_malformed_inter_files(capsys, tmp_path, content, expected):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.inter").write_text(content)
    fails_with(capsys, ["--dataset=bad", f"--data_path={tmp_path}", *TINY_ARGS], expected)


@pytest.mark.parametrize(
    "model, longest, expected",
    [
        # a sequential model's rows are (prefix, next item) pairs: 4 items give training, validation and test one each
        ("RecGPT", 3, "has no validation rows: leave-one-out gives a user one only from 4 interactions on, and its longest history has 3"),
        ("SASRec", 2, "has no validation rows: leave-one-out gives a user one only from 4 interactions on, and its longest history has 2"),
        ("SASRec", 1, "has no training rows: leave-one-out gives a user one only from 2 interactions on"),
        ("Pop", 2, "has no validation rows: leave-one-out gives a user one only from 3 interactions on, and its longest history has 2"),
    ],
)
def test_histories_too_short_for_a_part_of_the_split(capsys, tmp_path, model, longest, expected):
    # 30 users over 40 items, user u's history is u, u+1, ... (the longest `longest` items)
    write_inter(tmp_path, "short", {str(u): [str((u + i) % 40 + 1) for i in range(1 + u % longest)] for u in range(1, 31)})
    args = [f"--model={model}", "--dataset=short", f"--data_path={tmp_path}", f"--checkpoint_dir={tmp_path}"]
    fails_with(capsys, args + [f"--{key}={value}" for key, value in TINY_CONFIG.items() if model == "RecGPT" or key in TINY_DATA], expected)


def test_four_interactions_are_enough_for_a_sequential_split(tmp_path):
    from recbole.data import create_dataset, data_preparation

    from recbole_recgpt.checks import check_split
    from recbole_recgpt.config import create_config

    write_inter(tmp_path, "short", {str(u): [str((u + i) % 40 + 1) for i in range(1 + u % 4)] for u in range(1, 31)})
    config = create_config("SASRec", "short", config_dict={**TINY_DATA, "data_path": str(tmp_path)})
    dataset = create_dataset(config)
    check_split(config, dataset)
    parts = data_preparation(config, dataset)
    assert [len(part.dataset) > 0 for part in parts] == [True, True, True]


def test_yaml_that_does_not_parse(capsys, tiny_args, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: 3\nprompt_length: [1, 2\n")
    fails_with(capsys, tiny_args + [f"--config_files={broken}"], "is not valid YAML at line")


def test_yaml_that_does_not_exist(capsys, tiny_args):
    fails_with(capsys, tiny_args + ["--config_files=/no/such.yaml"], "config file /no/such.yaml does not exist")


def test_misspelled_parameter_in_a_yaml_file(capsys, tiny_args, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("stage1n: 5\n")
    fails_with(capsys, tiny_args + [f"--config_files={typo}"], "unknown parameter 'stage1n' in config file")


@pytest.fixture
def saved_checkpoint(tiny_data_path, tmp_path):
    """A finished tiny RecGPT run's checkpoint."""
    from recbole_recgpt.quick_start import run_recgpt

    settings = {**TINY_CONFIG, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path / "first")}
    return run_recgpt("RecGPT", "tiny", config_dict={**settings, "epochs": 1, "prompt_tuning": False})["checkpoint"]


def test_pretrained_checkpoint_of_another_shape(capsys, tiny_args, saved_checkpoint):
    args = with_args(tiny_args, hidden_size=32, pretrained_checkpoint=saved_checkpoint)
    fails_with(capsys, args, "does not fit this model: item_embedding.weight has shape")


def test_pretrained_checkpoint_of_another_dataset(capsys, tmp_path, saved_checkpoint):
    write_inter(tmp_path / "other", "other", tiny_sequences())
    args = ["--dataset=other", f"--data_path={tmp_path / 'other'}", f"--checkpoint_dir={tmp_path}", *TINY_ARGS]
    fails_with(capsys, args + [f"--pretrained_checkpoint={saved_checkpoint}"], "of dataset 'tiny'; this run is RecGPT on 'other'")


def test_pretrained_checkpoint_is_used(tiny_args, saved_checkpoint, tmp_path):
    from recbole_recgpt.quick_start import run_recgpt

    args = dict(a[2:].split("=", 1) for a in with_args(tiny_args, pretrained_checkpoint=saved_checkpoint))
    result = run_recgpt("RecGPT", args.pop("dataset"), config_dict=args)
    assert set(result["phases"]) == {"finetune"}


def test_resume_file_that_does_not_exist(capsys):
    fails_with(capsys, ["--resume=/no/such-resume.pth"], "resume file /no/such-resume.pth does not exist")


def test_empty_history_is_refused(tiny_config):
    from recbole.data.interaction import Interaction

    from recbole_recgpt.errors import DataError
    from recbole_recgpt.quick_start import build

    _, _, model, _ = build(tiny_config())
    rows = Interaction({
        model.ITEM_SEQ: torch.tensor([[3, 4, 0], [0, 0, 0]]),
        model.ITEM_SEQ_LEN: torch.tensor([2, 0]),
        model.USER_ID: torch.tensor([1, 2]),
    })
    with pytest.raises(DataError, match="1 user\\(s\\) have an empty history"):
        model.full_sort_predict(rows)


def test_the_real_command_line_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, str(REPO / "run_recgpt.py"), "--dataset=nosuch", f"--data_path={tmp_path}"]
    plain = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]
    assert "Traceback" not in plain.stderr
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DataError" in debug.stderr


@pytest.mark.parametrize(
    "model, changes, expected",
    [
        ("RecGPT", {**TINY_CONFIG, "pretrained_checkpoint": "missing.pth"}, "pretrained_checkpoint missing.pth does not exist"),
        ("Caser", {**TINY_DATA, "baseline_trainer": "whole_sequence"}, "supports SASRec, GRU4Rec, BERT4Rec with loss_type CE or BPR"),
        ("SASRec", {**TINY_DATA, "loss_type": "BPR", "one_negative_loss": "bce", "baseline_trainer": "recbole"},
         "one_negative_loss='bce' is a loss of the whole-sequence trainer, which this run (SASRec, baseline_trainer=recbole) "
         "does not use; use baseline_trainer=auto"),
        ("SASRec", {**TINY_DATA, "baseline_trainer": "fast"}, "baseline_trainer='fast' is unknown; use one of auto, recbole, whole_sequence"),
        ("SASRec", {**TINY_DATA, "baseline_trainer": "whole_sequence", "one_negative_loss": "bce"},
         "one_negative_loss=bce needs loss_type=BPR (one sampled negative) and SASRec or GRU4Rec, not SASRec with loss_type=CE"),
        ("GRU4Rec", {**TINY_DATA, "baseline_trainer": "whole_sequence", "one_negative_loss": "hinge"},
         "one_negative_loss='hinge' is unknown; use one of bpr, bce"),
        ("SASRec", {**TINY_DATA, "epochs": -1}, "epochs=-1 must be an integer >= 0"),
        ("GRU4Rec", {**TINY_DATA, "MAX_ITEM_LIST_LENGTH": "abc"}, "MAX_ITEM_LIST_LENGTH='abc' must be an integer >= 1"),
        ("Pop", {**TINY_DATA, "valid_metric": "MRR@10"}, "valid_metric=MRR@10 is not computed by validation"),
        ("SASRec", {**TINY_DATA, "seed": 1.5}, "seed=1.5 must be an integer >= 0"),
        ("SASRec", {**TINY_DATA, "n_layers": 0}, "n_layers=0 must be an integer >= 1"),
        ("BERT4Rec", {**TINY_DATA, "hidden_dropout_prob": -0.1}, "hidden_dropout_prob=-0.1 must be a probability >= 0 and < 1"),
        ("GRU4Rec", {**TINY_DATA, "num_layers": 0}, "num_layers=0 must be an integer >= 1"),
        ("SASRec", {**TINY_DATA, "eval_args": "{'split':{'LS':'bad'},'order':'TO','mode':'full'}"},
         "eval_args split LS='bad' is unknown; use one of valid_and_test, valid_only, test_only"),
    ],
)
def test_checks_that_need_no_data_stop_the_command_before_anything_is_loaded(tiny_data_path, tmp_path, model, changes, expected):
    args = [f"--model={model}", "--dataset=tiny", f"--data_path={tiny_data_path}", *(f"--{k}={v}" for k, v in changes.items())]
    completed = subprocess.run([sys.executable, str(REPO / "run_recgpt.py"), *args], cwd=tmp_path, capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stdout == "" and completed.stderr.count("\n") == 1 and expected in completed.stderr, completed.stderr
    assert not (tmp_path / "log").exists(), "RecBole's logger started (and the configuration was logged) before the check"


def test_check_prints_the_resolved_configuration_and_loads_nothing(tiny_data_path, tmp_path):
    args = ["--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data_path}", "--check", "--hidden_size=8"]
    completed = subprocess.run([sys.executable, str(REPO / "run_recgpt.py"), *args], cwd=tmp_path, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    first, *settings = completed.stdout.splitlines()
    assert first.startswith("# valid: SASRec on tiny with WholeSequenceTrainer")
    assert "hidden_size: 8" in settings and "baseline_trainer: whole_sequence" in settings
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no log/, no saved/


def test_check_of_a_search_names_its_space(tiny_data_path, tmp_path):
    space = tmp_path / "space.hyper"
    space.write_text("learning_rate choice [0.01,0.001]\n")
    args = ["--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data_path}", f"--params_file={space}", "--check"]
    completed = subprocess.run([sys.executable, str(REPO / "run_hyper.py"), *args], cwd=tmp_path, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("# search space: learning_rate choice (0.01, 0.001)\n# valid: SASRec on tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.hyper"]


def test_validation_names_a_result_per_cutoff_for_the_metrics_of_top_k_lists_only():
    from recbole_recgpt.trainer.phased import validation_metric_names

    assert validation_metric_names(["Hit", "GAUC", "ItemCoverage"], [5, 10]) == [
        "hit@5", "hit@10", "gauc", "itemcoverage@5", "itemcoverage@10",
    ]
