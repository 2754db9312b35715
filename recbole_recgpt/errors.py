"""Errors in what the user gave us. Each message names the problem and the fix in one line;
the command line prints it without a traceback (``--debug`` shows one)."""


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
