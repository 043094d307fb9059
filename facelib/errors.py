"""The one exception type for bad user input, so the CLI can print it plainly and exit non-zero."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file(s) and the problem."""
