"""RecGPT's trainer: pre-training, then personalized prompt-tuning, each a resumable phase."""

from time import time

from recbole.trainer import Trainer

from recbole_recgpt.checks import check_pretrained_checkpoint
from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.distributed import plain_state_dict
from recbole_recgpt.errors import CheckpointError
from recbole_recgpt.trainer.phased import PhasedTrainer


class RecGPTTrainer(PhasedTrainer, Trainer):
    r"""Phase 1 (``pretrain``): next-item loss ``pretrain_loss`` (full-softmax NLL, or BCE
    with the loader's negatives, or a sampled loss) on whole user sequences.
    Phase 2 (``finetune``, when ``prompt_tuning``): ``finetune_loss`` on prompt-extended
    sequences with ``finetune_epochs`` and ``finetune_learning_rate``.

    Each phase early-stops on ``valid_metric`` and keeps its best checkpoint
    (``<checkpoint>-pretrain.pth``, ``<checkpoint>-finetune.pth``); phase 2 starts from
    phase 1's best. ``pretrained_checkpoint`` skips phase 1 and starts from a saved model.
    """

    phase_order = ("pretrain", "finetune")
    EPOCH_KEYS = ("epochs", "finetune_epochs")
    LEARNING_RATE_KEYS = ("learning_rate", "finetune_learning_rate")
    display_name = "RecGPTTrainer"
    LOSS_KEYS = ("pretrain_loss", "finetune_loss")
    SPARSE_ITEM_GRADIENTS = True

    @classmethod
    def epoch_budget(cls, settings):
        return int(settings["epochs"]) + (int(settings["finetune_epochs"]) if settings["prompt_tuning"] else 0)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        config, dataset = self.config, train_data.dataset
        phase_kwargs = dict(
            valid_data=valid_data, verbose=verbose, saved=saved, show_progress=show_progress, callback_fn=callback_fn
        )
        result = (self.best_valid_score, self.best_valid_result)
        if config["pretrained_checkpoint"] and self.resume_state is None:
            self.load_pretrained(config["pretrained_checkpoint"])
        elif not self.resumes_past("pretrain"):
            result = self.run_phase(
                "pretrain",
                lambda: UserSequenceDataLoader(
                    config, dataset, neg_sample_num=config["neg_sample_num"] if config["pretrain_loss"] == "bce" else 0
                ),
                config["epochs"], config["learning_rate"], **phase_kwargs,
            )
        if config["prompt_tuning"] and self.last_phase != "pretrain":
            self.model.start_prompt_tuning()
            result = self.run_phase(
                "finetune", lambda: self.prompt_tuning_loader(dataset),
                config["finetune_epochs"], config["finetune_learning_rate"], **phase_kwargs,
            )
        return result

    def prompt_tuning_loader(self, dataset):
        loader = UserSequenceDataLoader(self.config, dataset)
        if self.model.prompt_writer is not None:
            # A frozen writer's prompts never change: write them once for the phase.
            start = time()
            loader.write_prompts(self.model.prompted_training_batch)
            self.phase_record()["prompt_writing_seconds"] = time() - start
        return loader

    def load_pretrained(self, path):
        """Start from the phase-1 network of a saved RecGPT checkpoint."""
        checkpoint = check_pretrained_checkpoint(path, self.config, self.device)
        try:
            self.model.load_pretrained_network(plain_state_dict(checkpoint["state_dict"]))
        except ValueError as error:
            raise CheckpointError(
                f"pretrained_checkpoint {path} does not fit this model: {error}; use the same hidden_size / n_layers / "
                "inner_size / n_positions / user_embedding as the run that saved it"
            ) from None
        self.logger.info(f"Phase 1 skipped: pre-trained network loaded from {path}")
