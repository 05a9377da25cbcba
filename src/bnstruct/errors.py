"""Errors that carry a message telling the user what to fix.

The CLI prints ``str(err)`` on one line and exits with code 2 for any :class:`BnstructError`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BnstructError", "ConfigError", "DataError", "RunExistsError", "ExecutionFailed"]


class BnstructError(ValueError):
    """Base class of every user-facing bnstruct error."""


class ConfigError(BnstructError):
    """An argument or configuration value is invalid."""


class DataError(BnstructError):
    """Input data is malformed (shapes, non-finite values, empty arrays)."""


class RunExistsError(BnstructError):
    """A run directory already exists and ``resume`` was not requested."""


class ExecutionFailed(BnstructError):
    """Some runs failed (their task raised or kept dying); the others finished.

    ``errors`` maps run name to a one-line error; ``runs`` holds the finished runs by name."""

    def __init__(self, errors: dict[str, str], runs: dict[str, Any]) -> None:
        self.errors = dict(errors)
        self.runs = dict(runs)
        first = next(iter(self.errors.items()))
        super().__init__(f"{len(self.errors)} run(s) failed, {len(self.runs)} finished; "
                         f"{first[0]}: {first[1]}")
