"""The evaluation protocol: which items a ranking may name, decided once from the config.

Under RecBole's sequential full sort every item is ranked, the user's past items included;
``eval_mask_history: True`` (the RecGPT reference code's protocol) never ranks them. The
evaluation loaders, RecGPT's two recall stages and the recommender all ask one
:class:`EvaluationProtocol`, so every model is scored, and every user served, alike.
"""

from dataclasses import dataclass

from recbole_recgpt.errors import ConfigError


@dataclass(frozen=True)
class EvaluationProtocol:
    mask_history: bool

    @classmethod
    def from_config(cls, config):
        """The protocol of a config; :class:`ConfigError` for settings it cannot honour."""
        mask = config["eval_mask_history"]
        if not isinstance(mask, bool):
            raise ConfigError(f"eval_mask_history={mask!r} must be True or False")
        modes = config["eval_args"]["mode"]
        modes = modes.values() if isinstance(modes, dict) else [modes]
        if mask and any(mode != "full" for mode in modes):
            raise ConfigError(
                "eval_mask_history masks history items in full-sort ranking; sampled evaluation (eval_args mode "
                f"{', '.join(sorted(set(modes)))}) has no such ranking: set eval_args mode to full or drop eval_mask_history"
            )
        return cls(mask_history=mask)

    def excluded(self, item_seq):
        """Histories ``[B, L]`` -> the items these users' rankings must skip (``[B, L]``, padding
        0 included), or None when every item may be ranked."""
        return item_seq if self.mask_history else None

    def evaluation_loader_class(self, config, phase):
        """RecBole's evaluation loader class for ``phase``, or the one that hands the evaluator
        each user's history to mask."""
        if self.mask_history:
            from recbole_recgpt.data import HistoryMaskingEvalDataLoader

            return HistoryMaskingEvalDataLoader
        from recbole.data.utils import get_dataloader

        return get_dataloader(config, phase)
