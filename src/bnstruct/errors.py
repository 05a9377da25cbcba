"""Errors that carry a message telling the user what to fix.

The CLI prints ``str(err)`` on one line and exits with code 2 for any :class:`BnstructError`.
"""

from __future__ import annotations

__all__ = ["BnstructError", "ConfigError", "DataError", "RunExistsError"]


class BnstructError(ValueError):
    """Base class of every user-facing bnstruct error."""


class ConfigError(BnstructError):
    """An argument or configuration value is invalid."""


class DataError(BnstructError):
    """Input data is malformed (shapes, non-finite values, empty arrays)."""


class RunExistsError(BnstructError):
    """A run directory already exists and ``resume`` was not requested."""
