"""Exception types for bad user input, so the CLI can print them plainly and exit non-zero."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file(s) and the problem."""


class ConfigError(ValueError):
    """A bad name or setting (model, loss, ...): the message lists what is valid."""


class ReportError(RuntimeError):
    """A report could not be made: a notebook failed (the message names it and the cell), or a run is missing
    and this machine should not train it."""


class RunBusyError(RuntimeError):
    """A run is being trained by another process (the message names it); training it twice at once would
    have both write the same run folder."""
