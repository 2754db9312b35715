"""Reading checkpoints for a role, loading their weights, and fitting a phase-1 network to a
phase-2 model: the one-line errors a bad file gets, and the tensors that end up loaded."""

import pickle
from pathlib import Path

import pytest
import torch

from recbole_recgpt.checkpoints import load_weights, read_checkpoint
from recbole_recgpt.errors import CheckpointError
from recbole_recgpt.quick_start import build


@pytest.mark.parametrize(
    "role, expected",
    [
        ("model", "checkpoint {path} does not exist; give a *-finetune.pth / *-pretrain.pth / *-train.pth file"),
        ("pretrained", "pretrained_checkpoint {path} does not exist; give the path of a saved RecGPT checkpoint"),
        ("resume", "resume file {path} does not exist; give the *-resume.pth file the run wrote beside its checkpoints"),
    ],
)
def test_a_missing_file_is_named_by_its_role(tmp_path, role, expected):
    path = tmp_path / "gone.pth"
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path, role)
    assert str(caught.value) == expected.format(path=path)


def test_a_file_that_is_not_a_checkpoint_says_what_to_give(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint .*notes.pth cannot be read \(UnpicklingError\); give a"):
        read_checkpoint(text, "model")
    other = tmp_path / "weights.pth"
    torch.save({"state_dict": {}}, other)  # no config: not a RecBole checkpoint
    with pytest.raises(CheckpointError, match=r"weights.pth is not a checkpoint; give a \*-finetune.pth"):
        read_checkpoint(other, "model")
    with pytest.raises(CheckpointError, match=r"weights.pth is not a resume file; give the \*-resume.pth file"):
        read_checkpoint(other, "resume")


class Moved:
    """Stands for a class a checkpoint pickled and a later release moved."""


def test_a_checkpoint_whose_pickled_class_has_moved_fails_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "old.pth"
    torch.save({"config": Moved(), "state_dict": {}}, path, pickle_protocol=4)
    monkeypatch.delattr(__import__(__name__, fromlist=["Moved"]), "Moved")
    with pytest.raises(CheckpointError, match=r"old.pth was written by a version of recbole-recgpt or RecBole whose "
                                              r"classes this one lacks \(.*Moved.*\); load it with the version that wrote it"):
        read_checkpoint(path, "model")
    assert pickle.HIGHEST_PROTOCOL >= 4


def test_weights_load_strictly_or_only_those_the_model_has(tiny_config):
    _, _, model, _ = build(tiny_config("SASRec"))
    saved = {f"module.{key}": value + 1 for key, value in model.state_dict().items()}  # as DDP saves them
    saved["module.extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="extra.weight"):
        load_weights(model, saved)
    load_weights(model, saved, strict=False)
    assert all(torch.equal(value, saved[f"module.{key}"]) for key, value in model.state_dict().items())
    del saved["module.item_embedding.weight"]
    with pytest.raises(CheckpointError, match="the checkpoint lacks item_embedding.weight"):
        load_weights(model, saved, strict=False)


def test_a_phase_one_network_fits_a_phase_two_model_with_a_longer_position_table(tiny_config):
    _, _, phase_one, _ = build(tiny_config("RecGPT", prompt_length=0))
    _, _, phase_two, _ = build(tiny_config("RecGPT", prompt_length=2))
    saved, own = phase_one.gpt.position_embedding.weight, phase_two.gpt.position_embedding.weight.clone()
    assert len(saved) < len(own)  # the prompts need more positions
    phase_two.load_pretrained_network(phase_one.state_dict())
    loaded = phase_two.gpt.position_embedding.weight
    assert torch.equal(loaded[: len(saved)], saved) and torch.equal(loaded[len(saved):], own[len(saved):])
    assert torch.equal(phase_two.gpt.item_embedding.weight, phase_one.gpt.item_embedding.weight)


def test_a_network_of_another_size_is_refused_with_the_tensor_that_differs(tiny_config):
    _, _, small, _ = build(tiny_config("RecGPT"))
    _, _, large, _ = build(tiny_config("RecGPT", hidden_size=32, inner_size=64))
    with pytest.raises(ValueError, match=r"item_embedding.weight has shape \(\d+, 16\), this run needs \(\d+, 32\)"):
        large.load_pretrained_network(small.state_dict())


def test_a_checkpoint_name_is_not_reused_after_its_files_are_deleted(tmp_path):
    # A record names its model by the checkpoint path; a run trained again in the same second,
    # after a fresh checkout lost the files, must not take its predecessor's name.
    import time

    from recbole_recgpt.trainer.phased import checkpoint_stem

    first = checkpoint_stem(tmp_path, "RecGPT", "tiny")
    Path(f"{first}-finetune.pth").touch()
    assert checkpoint_stem(tmp_path, "RecGPT", "tiny") != first  # the file is there: another name
    Path(f"{first}-finetune.pth").unlink()
    time.sleep(0.002)
    assert checkpoint_stem(tmp_path, "RecGPT", "tiny") != first  # gone, and still another name
