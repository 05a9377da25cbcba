"""Comparison helper for tests and claim checks: explicit tolerances, explained failures."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["assert_close"]


def _as_f64(x: Any) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.detach().cpu().to(torch.float64)
    return torch.tensor(np.array(x, dtype=np.float64))  # a copy: pandas may give read-only views


def assert_close(actual: Any, expected: Any, *, rtol: float, atol: float, what: str = "") -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise (float64).

    Both tolerances are required. On failure the message names ``what`` and says where and by
    how much the arrays differ (worst absolute and relative error and its index), via
    :func:`torch.testing.assert_close`.
    """
    a, e = _as_f64(actual), _as_f64(expected)
    torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=False,
                               msg=lambda m: f"{what or 'values'} differ (rtol={rtol:g}, "
                                             f"atol={atol:g}):\n{m}")
