"""Search spaces in RecBole's hyper-file format, and the trial lists drawn from them.

One parameter a line, as RecBole's ``HyperTuning`` reads them::

    learning_rate choice [0.001,0.0005]     # one of the listed values
    dropout uniform 0.1,0.5                 # a float in [low, high]
    hidden_size quniform 32,128,32          # round(uniform(low, high) / q) * q (an int when all three are)
    learning_rate loguniform -9,-5          # exp(uniform(low, high)): low, high are logs

Lines starting with ``#`` are comments (this plugin's hyper files state their budget in one;
RecBole's own reader does not skip them). A parameter combination is identified by
:func:`params_key`, which is how a rerun of a search recognises its finished trials.
"""

import ast
import itertools
import json
import math
from dataclasses import dataclass

import numpy as np

from recbole_recgpt.errors import ConfigError

KINDS = {"choice": 1, "uniform": 2, "quniform": 3, "loguniform": 2}  # kind -> number of values


@dataclass(frozen=True)
class Parameter:
    """One searched parameter: ``values`` are the choices, or (low, high[, q]) of a range."""

    name: str
    kind: str
    values: tuple

    def value(self, drawn):
        """A drawn value as a run reads it: a numpy scalar (as hyperopt returns) as its Python
        value, and a ``quniform`` over integers (``hidden_size quniform 32,128,32``) as an
        int, which sizes and counts must be."""
        drawn = plain(drawn)
        if self.kind == "quniform" and all(float(bound).is_integer() for bound in self.values):
            return int(round(drawn))
        return drawn


def read_space(path):
    """The parameters of a hyper file, in file order; :class:`ConfigError` on a bad line."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as error:
        raise ConfigError(f"params_file {path} cannot be read ({error.strerror}); check --params_file") from None
    space = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"params_file {path} line {number}"
        tokens = line.split()
        if len(tokens) < 3 or tokens[1] not in KINDS:
            raise ConfigError(
                f"{where}: expected 'name {'|'.join(KINDS)} values', got {line!r}"
            )
        name, kind, text = tokens[0], tokens[1], "".join(tokens[2:])
        if any(parameter.name == name for parameter in space):
            raise ConfigError(f"{where}: {name} is searched twice")
        space.append(Parameter(name, kind, _values(kind, text, where)))
    if not space:
        raise ConfigError(f"params_file {path} names no parameter")
    return space


def _values(kind, text, where):
    if kind == "choice":
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values = None
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: choice needs a non-empty list such as [0.001,0.0005], got {text!r}")
        return tuple(values)
    try:
        values = tuple(float(value) for value in text.split(","))
    except ValueError:
        values = ()
    if len(values) != KINDS[kind] or values[0] > values[1]:
        shape = "low,high,q" if kind == "quniform" else "low,high"
        raise ConfigError(f"{where}: {kind} needs {shape} numbers with low <= high, got {text!r}")
    return values


def grid(space):
    """Every combination of a space of choices, the first parameter varying slowest."""
    ranges = [parameter for parameter in space if parameter.kind != "choice"]
    if ranges:
        raise ConfigError(
            f"an exhaustive search needs 'choice' parameters; {ranges[0].name} is {ranges[0].kind}: "
            "use --algo=random (or bayes with --tool=hyperopt)"
        )
    names = [parameter.name for parameter in space]
    return [dict(zip(names, values)) for values in itertools.product(*(p.values for p in space))]


def sample(space, count, seed):
    """``count`` random combinations, the same for the same seed (so a rerun finds its trials)."""
    rng = np.random.RandomState(seed)
    return [{parameter.name: _draw(parameter, rng) for parameter in space} for _ in range(count)]


def _draw(parameter, rng):
    if parameter.kind == "choice":
        return parameter.values[rng.randint(len(parameter.values))]
    low, high = parameter.values[:2]
    if parameter.kind == "uniform":
        return float(rng.uniform(low, high))
    if parameter.kind == "loguniform":
        return float(math.exp(rng.uniform(low, high)))
    q = parameter.values[2]
    return parameter.value(float(round(rng.uniform(low, high) / q) * q))


def hyperopt_space(space):
    """The space as hyperopt expressions, built by RecBole's own ``HyperTuning`` code."""
    from recbole.trainer import HyperTuning

    by_kind = {}
    for parameter in space:
        values = list(parameter.values)
        by_kind.setdefault(parameter.kind, {})[parameter.name] = values
    return HyperTuning._build_space_from_dict(by_kind)


def plain(value):
    """A numpy scalar (as hyperopt may return) as the Python value."""
    return value.item() if isinstance(value, np.generic) else value


def params_key(params):
    """The identity of a parameter combination: the same dict gives the same string."""
    return json.dumps({name: plain(value) for name, value in params.items()}, sort_keys=True)


def params_text(params):
    """``name:value, name:value``, as RecBole's ``HyperTuning`` writes a combination."""
    return ", ".join(f"{name}:{plain(value)}" for name, value in params.items())
