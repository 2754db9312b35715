"""Top-K recommendations from a saved checkpoint: for users of its dataset, or for raw
histories given as item tokens.

Items are ranked exactly as evaluation ranks them: the model's top-k over the catalogue
(:func:`recbole_recgpt.ranking.full_sort_top_k`; for RecGPT: prompts, then two-stage recall),
padding excluded. As in
evaluation, items already in the history are removed only under ``eval_mask_history``.

    from recbole_recgpt.recommend import recommend
    recommend("saved/RecGPT-ml-100k-...-finetune.pth", users=["196"], k=10)
    recommend("saved/RecGPT-ml-100k-...-finetune.pth", histories=[["242", "302", "377"]], k=10)
"""

import csv
import io
import json
import os

import numpy as np
import torch

from recbole.data import create_dataset
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_recgpt.checkpoints import read_checkpoint, rebuild
from recbole_recgpt.checks import check_dataset_files
from recbole_recgpt.config import for_this_process
from recbole_recgpt.errors import CheckpointError, ConfigError, DataError
from recbole_recgpt.ranking import full_sort_top_k
from recbole_recgpt.protocol import EvaluationProtocol
from recbole_recgpt.utils import get_model

FORMATS = ("csv", "json")


class Recommender:
    """A saved sequential model with its dataset: token maps and every user's history.

    A user's history is all of their interactions in the dataset, ordered by time (the
    training, validation and test items alike), its last ``MAX_ITEM_LIST_LENGTH`` items used.
    """

    def __init__(self, config, model, dataset):
        self.config, self.model, self.dataset = config, model, dataset
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.max_length = config["MAX_ITEM_LIST_LENGTH"]
        self.protocol = EvaluationProtocol.from_config(config)
        self.batch_size = config["eval_batch_size"]
        self.catalogue_size = dataset.item_num - 1  # ids 1..item_num-1; 0 is padding
        feat = dataset.inter_feat.sort_values([self.uid_field, dataset.time_field], kind="stable")
        users, items = feat[self.uid_field].to_numpy(), feat[self.iid_field].to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        self.histories = dict(zip(users[starts].tolist(), np.split(items, starts[1:])))

    @classmethod
    def from_checkpoint(cls, path, data_path=None):
        """Rebuild the model of a checkpoint and its dataset (``data_path`` overrides the
        folder the run read its data from)."""
        checkpoint = read_checkpoint(path, "model")
        config = checkpoint["config"]
        if data_path is not None:
            config["data_path"] = os.path.join(data_path, config["dataset"])
        config = for_this_process(config)  # the device of this machine, whatever process saved it
        model_class = get_model(config["model"])
        if not issubclass(model_class, SequentialRecommender):
            raise CheckpointError(
                f"checkpoint {path} holds {config['model']}, which does not rank from a history; use RecGPT or a "
                "sequential baseline (SASRec, GRU4Rec, BERT4Rec, ...)"
            )
        check_dataset_files(config)
        dataset = create_dataset(config)
        return cls(config, rebuild(checkpoint, dataset).eval(), dataset)

    def for_users(self, users, k=10):
        """``[{"user": token, "items": [k item tokens, best first]}]`` for user tokens."""
        users = [str(user) for user in users]
        known = self.dataset.field2token_id[self.uid_field]
        unknown = [user for user in users if user not in known]
        if unknown:
            raise DataError(
                f"user '{unknown[0]}' is not in dataset '{self.config['dataset']}' ({len(unknown)} unknown of "
                f"{len(users)}); give user ids of the data the model was trained on, or a history of items"
            )
        user_ids = [known[user] for user in users]
        items = self._top_k([self.histories[u] for u in user_ids], user_ids, k)
        return [{"user": user, "items": row} for user, row in zip(users, items)]

    def for_histories(self, histories, k=10):
        """``[{"history": n, "items": [...]}]`` for histories of item tokens (oldest first),
        numbered from 1 in the order given. They are scored as a user without an id (the
        padding user; only ``user_embedding: True`` models read it)."""
        known = self.dataset.field2token_id[self.iid_field]
        item_ids = []
        for number, history in enumerate(histories, start=1):
            history = [str(item) for item in history]
            if not history:
                raise DataError(f"history {number} is empty; give at least one item")
            unknown = [item for item in history if item not in known]
            if unknown:
                raise DataError(
                    f"history {number}: item '{unknown[0]}' is not in the catalogue of dataset "
                    f"'{self.config['dataset']}' ({self.catalogue_size} items); give item ids of its .inter file"
                )
            item_ids.append(np.array([known[item] for item in history]))
        items = self._top_k(item_ids, [0] * len(item_ids), k)
        return [{"history": number, "items": row} for number, row in enumerate(items, start=1)]

    @torch.no_grad()
    def _top_k(self, histories, user_ids, k):
        """Item-id arrays and user ids -> ``k`` item tokens per history, best first."""
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} must be an integer >= 1")
        if k > self.catalogue_size:
            raise ConfigError(
                f"k={k} is more than the {self.catalogue_size} items of dataset '{self.config['dataset']}'; "
                f"ask for at most {self.catalogue_size}"
            )
        model, ranked = self.model, []
        for start in range(0, len(histories), self.batch_size):
            batch = [history[-self.max_length:] for history in histories[start: start + self.batch_size]]
            item_seq = torch.zeros(len(batch), self.max_length, dtype=torch.long)
            for row, history in enumerate(batch):
                item_seq[row, : len(history)] = torch.as_tensor(history)
            interaction = Interaction({
                model.ITEM_SEQ: item_seq,
                model.ITEM_SEQ_LEN: torch.tensor([len(history) for history in batch]),
                model.USER_ID: torch.tensor(user_ids[start: start + self.batch_size]),
            }).to(self.config["device"])
            # As evaluation ranks: never the padding item, nor the history when it is masked.
            excluded = self.protocol.excluded(interaction[model.ITEM_SEQ])
            ranked.append(full_sort_top_k(model, interaction, k, excluded).cpu())
        top = torch.cat(ranked).numpy() if ranked else np.zeros((0, k), dtype=np.int64)
        return [list(self.dataset.id2token(self.iid_field, row)) for row in top]


def recommend(checkpoint, users=None, histories=None, k=10, data_path=None):
    """Top-``k`` items for user tokens of the checkpoint's dataset and/or for histories of
    item tokens; rows as :meth:`Recommender.for_users` / :meth:`Recommender.for_histories`."""
    if not users and not histories:
        raise ConfigError("nothing to recommend for: give users (ids of the dataset) or histories (item ids)")
    recommender = Recommender.from_checkpoint(checkpoint, data_path)
    rows = recommender.for_users(users, k) if users else []
    return rows + (recommender.for_histories(histories, k) if histories else [])


def format_recommendations(rows, fmt):
    """Rows as text: ``csv`` (one line per item: user and/or history, rank, item) or ``json``
    (one object per user or history)."""
    if fmt == "json":
        return "[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n"
    if fmt != "csv":
        raise ConfigError(f"format={fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    keys = list(dict.fromkeys(key for row in rows for key in row if key != "items"))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*keys, "rank", "item"])
    for row in rows:
        for rank, item in enumerate(row["items"], start=1):
            writer.writerow([*(row.get(key, "") for key in keys), rank, item])
    return text.getvalue()
