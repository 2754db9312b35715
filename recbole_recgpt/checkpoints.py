"""Checkpoints and resume files: the one place that reads them, rebuilds a model from one and
loads its weights.

A run writes ``<stem>-<phase>.pth`` (RecBole's checkpoint: ``config``, ``state_dict``, ...)
after each improving validation and ``<stem>-resume.pth`` (the whole training state) after
every epoch. Each is read for a *role*, which names the file in the one-line error a bad path
gets and says what to give instead. Both pickle class paths (RecBole's ``Config``, enums), so
the files of an earlier release must still unpickle (tests/test_checkpoint_compatibility.py).
"""

import os

from recbole_recgpt.compat import load_checkpoint
from recbole_recgpt.distributed import plain_state_dict
from recbole_recgpt.errors import CheckpointError

# role -> (what the file is called in an error, what to give instead, keys it must hold)
ROLES = {
    "pretrained": ("pretrained_checkpoint", "give the path of a saved RecGPT checkpoint", {"config", "state_dict"}),
    "model": ("checkpoint", "give a *-finetune.pth / *-pretrain.pth / *-train.pth file", {"config", "state_dict"}),
    "resume": ("resume file", "give the *-resume.pth file the run wrote beside its checkpoints", {"config", "phase_done"}),
}


def read_checkpoint(path, role, map_location="cpu"):
    """The dict saved in ``path``, checked to be a file of ``role`` (a key of :data:`ROLES`);
    :class:`CheckpointError` with one line naming the problem and the fix otherwise."""
    name, fix, keys = ROLES[role]
    if not os.path.isfile(path):
        raise CheckpointError(f"{name} {path} does not exist; {fix}")
    try:
        saved = load_checkpoint(path, map_location)
    except (ModuleNotFoundError, AttributeError) as error:  # a class it pickled has moved or gone
        raise CheckpointError(
            f"{name} {path} was written by a version of recbole-recgpt or RecBole whose classes this one lacks "
            f"({error}); load it with the version that wrote it"
        ) from None
    except Exception as error:
        raise CheckpointError(f"{name} {path} cannot be read ({type(error).__name__}); {fix}") from None
    if not isinstance(saved, dict) or not keys <= set(saved):
        raise CheckpointError(f"{path} is not a {name}; {fix}")
    return saved


def load_weights(model, state_dict, strict=True):
    """Load ``state_dict`` (a checkpoint's, DDP prefix or not) into ``model``. ``strict=False``
    loads only the tensors the model has (a phase-1 checkpoint also holds the prompt writer a
    pre-training-only model lacks); every tensor the model needs must be there either way."""
    state_dict = plain_state_dict(state_dict)
    if not strict:
        own = model.state_dict()
        missing = [key for key in own if key not in state_dict]
        if missing:
            raise CheckpointError(f"the checkpoint lacks {', '.join(missing)}; give a checkpoint of this model")
        state_dict = {key: state_dict[key] for key in own}
    model.load_state_dict(state_dict)


def rebuild(checkpoint, dataset=None):
    """The model of a ``checkpoint`` (read for role ``model``) with its weights, on this
    process's device: built from the checkpoint's own config and ``dataset`` (RecBole's, made
    from that config when not given)."""
    from recbole.data import create_dataset

    from recbole_recgpt.utils import get_model

    config = checkpoint["config"]
    dataset = dataset if dataset is not None else create_dataset(config)
    model = get_model(config["model"])(config, dataset).to(config["device"])
    load_weights(model, checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return model
