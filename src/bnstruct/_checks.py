"""Strict checks of values at the API boundary, shared by the models, the configs, the
stages, the tasks and the CLI/TOML (which reach the same errors): no ``bool`` for numbers,
no ``str`` for sizes, seeds within ``uint64``, sizes checked against memory before
anything is allocated."""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import ConfigError

__all__ = ["integer", "number", "seed", "check_memory", "MAX_SEED"]

#: the largest seed a ``torch.Generator`` takes (``uint64``)
MAX_SEED = 2**64 - 1


def integer(name: str, v: Any, *, low: int | None = None) -> int:
    """``v`` as an ``int`` (``bool`` and ``float`` refused), at least ``low``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if low is not None and v < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


def number(name: str, v: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    """``v`` as a finite ``float`` (``bool`` and strings refused)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    if positive and not v > 0:
        raise ConfigError(f"{name} must be a positive finite number, got {v!r}")
    if nonneg and v < 0:
        raise ConfigError(f"{name} must be a non-negative finite number, got {v!r}")
    return float(v)


def seed(name: str, v: Any) -> int:
    """A seed: an integer in ``[0, 2**64 - 1]`` (what ``torch.Generator`` accepts)."""
    integer(name, v, low=0)
    if v > MAX_SEED:
        raise ConfigError(f"{name} must be at most 2**64 - 1, got {v}")
    return int(v)


def _physical_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_memory(what: str, n_values: int, bytes_per_value: int) -> None:
    """Refuse, before allocating, ``n_values`` values that alone exceed this machine's
    physical memory."""
    total = _physical_bytes()
    need = n_values * bytes_per_value
    if total is not None and need > total:
        raise ConfigError(f"{what} needs {need / 2**30:.3g} GiB for {n_values:.3g} values; this "
                          f"machine has {total / 2**30:.3g} GiB: choose smaller sizes")
