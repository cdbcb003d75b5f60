"""The one exception type for mistakes of the user (a bad flag, value, path or file).

`cmil` turns it into a single line `error: ...` on stderr and exit status 2; anything else is a bug
and keeps its traceback (exit status 1). Raise it only before anything has been written, so that the
corrected command then just works.
"""

from __future__ import annotations


class UsageError(Exception):
    """A bad input; the message (one line) names the input and the problem."""


class OutputExistsError(UsageError, FileExistsError):
    """The output would overwrite earlier results; nothing is overwritten without asking."""


class ConfigError(UsageError):
    """A config value out of range, of the wrong type, or unknown; the message names the field."""
