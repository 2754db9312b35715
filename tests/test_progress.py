"""Progress bars: named by phase, with an ETA, on a terminal; nothing when stderr is not one."""

import functools
import io
import re
import sys

from recbole_recgpt.quick_start import build
from recbole_recgpt.trainer import phased


class Stderr(io.StringIO):
    def __init__(self, terminal):
        super().__init__()
        self.terminal = terminal

    def isatty(self):
        return self.terminal


def run_with_stderr(tiny_config, monkeypatch, terminal):
    """A 1+1-epoch tiny run and its test evaluation, with ``show_progress`` on; its stderr."""
    _, (train, valid, test), _, trainer = build(tiny_config(epochs=1, finetune_epochs=1))
    stderr = Stderr(terminal)
    monkeypatch.setattr(sys, "stderr", stderr)
    # Redraw at every batch, however fast (tqdm waits 0.1 s between redraws).
    monkeypatch.setattr(phased, "tqdm", functools.partial(phased.tqdm, mininterval=0))
    trainer.fit(train, valid, saved=False, show_progress=True)
    trainer.evaluate(test, load_best_model=False, show_progress=True)
    monkeypatch.undo()
    return stderr.getvalue()


def test_a_terminal_shows_each_phase_with_an_eta(tiny_config, monkeypatch):
    shown = run_with_stderr(tiny_config, monkeypatch, terminal=True)
    bars = {match.group(1) for match in re.finditer(r"\r([a-z][a-z0-9 ]+?):\s+\d+%", shown)}
    assert bars == {
        "pretrain epoch 0 train", "pretrain epoch 0 valid", "finetune epoch 0 train", "finetune epoch 0 valid", "test",
    }
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", shown), "no elapsed<remaining (ETA) in the bars"


def test_no_terminal_no_bars(tiny_config, monkeypatch):
    assert run_with_stderr(tiny_config, monkeypatch, terminal=False) == ""
