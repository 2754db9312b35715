"""The one place that makes RecBole 1.2.1 run on current numpy / pandas / torch / setuptools.

Pinned in ``pyproject.toml`` (no code here can fix these from outside RecBole):

* ``numpy<2``: ``recbole.config.Config.compatibility_settings`` assigns ``np.float_`` etc.,
  which numpy 2 removed, so every ``Config(...)`` raises ``AttributeError``.
* ``pandas<3``: RecBole's ``Dataset._fill_nan`` calls ``df[col].fillna(..., inplace=True)``,
  a silent no-op under pandas 3 copy-on-write, so missing values would stay NaN.
* ``setuptools<81``: ray (imported by ``recbole.trainer.hyper_tuning``) imports
  ``pkg_resources``, which setuptools 81 removed.
* ``hyperopt==0.2.5``: RecBole's exhaustive search passes a ``RandomState`` where
  hyperopt >= 0.2.7 calls ``rng.integers`` (``AttributeError`` on the first trial).
* ``pyarrow<22``: Ray Tune (``run_hyper.py --tool=ray``) reads its result files with pyarrow,
  and pyarrow 26 refuses to import under numpy 1.x (21 works).

* RecBole restores numpy's removed aliases (``np.float`` ...) inside ``Config.__init__``; a
  ``Config`` unpickled from a checkpoint (resume, ``load_data_and_model``) skips that, and
  RecBole's evaluation then fails on ``np.float``. They are set once on import instead.

Silenced here: pandas 2.x warns on every dataset load that RecBole's ``fillna(inplace=True)``
will stop working in pandas 3 (it works under the pin), and torch warns on every epoch about
RecBole's ``torch.cuda.amp.GradScaler`` spelling.

Patched here:

* torch >= 2.6 loads with ``weights_only=True`` by default. RecBole's checkpoints pickle its
  ``Config`` object with pickle protocol 4, which the weights-only unpickler refuses outright
  (allow-listing classes does not help), so ``Trainer.evaluate(load_best_model=True)`` and
  ``Trainer.resume_checkpoint`` fail on files RecBole itself just wrote. Only RecBole's trainer
  module is given a ``torch`` whose ``load`` defaults to ``weights_only=False``; every other
  ``torch.load`` in the process keeps torch's safe default. The plugin's own loaders pass
  ``weights_only=False`` explicitly (see :func:`load_checkpoint`).
* RecBole's ``ensure_dir`` checks, then creates: two processes of one run (``--nproc``,
  torchrun) starting together race, and the loser fails with ``FileExistsError: './log'``.
  The modules that call it get one that creates with ``exist_ok=True``.
* RecBole's ``Collector.get_data_struct`` calls ``.cpu()`` on every collected value, but
  ``data_collect`` stores the catalogue size as an ``int`` and the item / user counts as a
  ``Counter``: every run asking for ItemCoverage, GiniIndex, ShannonEntropy, AveragePopularity
  or TailPercentage failed at its first evaluation (RecBole issues #2131, #2191). Only tensors
  are moved now.
"""

import copy
import functools
import os
import types
import warnings

import torch

import recbole.trainer.trainer as recbole_trainer_module
from recbole.config import Config
from recbole.evaluator.collector import Collector


def load_checkpoint(path, map_location=None):
    """Load a RecBole / RecGPT checkpoint (a trusted file this library wrote)."""
    return torch.load(path, map_location=map_location, weights_only=False)


class _TorchForRecBoleCheckpoints(types.ModuleType):
    """``torch`` as RecBole's trainer sees it: identical except ``load``'s default."""

    def __init__(self):
        super().__init__("torch")
        self.load = functools.partial(torch.load, weights_only=False)

    def __getattr__(self, name):
        return getattr(torch, name)


def patch_recbole_checkpoint_loading():
    if not isinstance(recbole_trainer_module.torch, _TorchForRecBoleCheckpoints):
        recbole_trainer_module.torch = _TorchForRecBoleCheckpoints()


patch_recbole_checkpoint_loading()
Config.compatibility_settings(object.__new__(Config))
warnings.filterwarnings("ignore", message=r"(?s).*inplace method will never work", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"(?s).*torch\.cuda\.amp\.GradScaler", category=FutureWarning)


def ensure_dir(dir_path):
    """RecBole's ``ensure_dir`` without its check-then-create race."""
    os.makedirs(dir_path, exist_ok=True)


def patch_recbole_ensure_dir():
    import recbole.data.utils
    import recbole.utils.logger

    for module in (recbole.utils.logger, recbole_trainer_module, recbole.data.utils):
        module.ensure_dir = ensure_dir


patch_recbole_ensure_dir()


def get_data_struct(self):
    """RecBole's ``Collector.get_data_struct``, moving only tensors to the CPU."""
    for key, value in self.data_struct._data_dict.items():
        if isinstance(value, torch.Tensor):
            self.data_struct._data_dict[key] = value.cpu()
    returned_struct = copy.deepcopy(self.data_struct)
    for key in ["rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"]:
        if key in self.data_struct:
            del self.data_struct[key]
    return returned_struct


Collector.get_data_struct = get_data_struct
