"""Errors in what the user gave us. Each message names the problem and the fix in one line;
the command line prints it without a traceback (``--debug`` shows one)."""

import numbers


class RecGPTError(Exception):
    """Base class: bad input or a run that cannot continue, explained in one line."""


class ConfigError(RecGPTError, ValueError):
    """A config file or parameter that cannot work."""


class DataError(RecGPTError):
    """A dataset that is missing or not in RecBole's atomic format."""


class CheckpointError(RecGPTError):
    """A checkpoint that is missing or does not fit this run."""


class TrainingError(RecGPTError):
    """Training that cannot go on (for example a loss that is no longer finite)."""


class ProcessGroupError(RecGPTError):
    """Several processes that cannot start or go on together (a busy port, too many
    processes for the machine, a process that failed or died)."""


class Stopped:
    """Mixin of a run stopped from outside, with what continues it: ``resume_file``, the resume
    state the run saved (None: stopped before the first), and where its processes ran, which
    the resumed run needs too: ``nproc`` (None: not started by the launcher) and ``offset``
    (the rank of this machine's first process)."""

    def __init__(self, message, resume_file=None, nproc=None, offset=0):
        super().__init__(message)
        self.resume_file, self.nproc, self.offset = resume_file, nproc, offset


class Interrupted(Stopped, KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run (a ``KeyboardInterrupt``, as Ctrl-C is elsewhere)."""


class ProcessKilled(Stopped, ProcessGroupError):
    """A process of several died without an error of its own (a signal, the out-of-memory
    killer, an exit status); the others were stopped."""


def one_line(error):
    """An exception as the one line the command line prints after ``error: ``."""
    if isinstance(error, RecGPTError):
        return str(error).replace("\n", " ")
    return f"{type(error).__name__}: {error} (rerun with --debug for the traceback)".replace("\n", " ")


def check_choice(key, value, choices):
    """:class:`ConfigError` naming the choices unless ``value`` is one of them."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is unknown; use one of {', '.join(choices)}")


def check_integer(key, value, minimum, meaning=""):
    """:class:`ConfigError` unless ``value`` is an integer >= ``minimum`` (True is not one);
    ``meaning`` (e.g. ``" (0: the whole batch at once)"``) ends the message."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}{meaning}")


def check_positive_number(key, value):
    """:class:`ConfigError` unless ``value`` is a number > 0 (True is not one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ConfigError(f"{key}={value!r} must be a number > 0")


def check_probability(key, value):
    """:class:`ConfigError` unless ``value`` is a number >= 0 and < 1 (a dropout; 1 drops everything)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r} must be a probability >= 0 and < 1")
