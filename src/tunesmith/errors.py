"""User-facing errors.

Anything raised as :class:`TunesmithError` is shown by the CLI as a one-paragraph
message without a traceback (``--debug`` shows it). Raise it for bad input the user
can fix; let genuine bugs surface as ordinary exceptions.
"""

from __future__ import annotations


class TunesmithError(Exception):
    """A problem with the user's input, explained with what to do about it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        # A multi-line problem (a list of errors) reads better with the fix on its own line.
        sep = "\n" if "\n" in problem else " "
        super().__init__(problem if not fix else f"{problem}{sep}{fix}")


class ConfigError(TunesmithError):
    """The recipe is invalid (unknown key, wrong type, contradictory settings)."""


class DataError(TunesmithError):
    """A dataset cannot be read or has rows that fail validation."""


class ModelError(TunesmithError):
    """A model cannot be found, converted or loaded."""


class RunStopped(Exception):
    """A caller stopped a run on purpose (a tuning trial pruned by its study): not a failure."""
