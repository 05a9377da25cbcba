"""Comparison helper for tests and claim checks: explicit tolerances, explained failures."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["assert_close"]


def assert_close(actual: Any, expected: Any, *, rtol: float, atol: float, what: str = "") -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise (float64).

    Both tolerances are required. On failure the message names ``what`` and says where and by
    how much the arrays differ (worst absolute and relative error and its index), via
    :func:`torch.testing.assert_close`.
    """
    a = torch.as_tensor(np.asarray(actual.detach().cpu() if torch.is_tensor(actual) else actual),
                        dtype=torch.float64)
    e = torch.as_tensor(np.asarray(expected.detach().cpu() if torch.is_tensor(expected)
                                   else expected), dtype=torch.float64)
    torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=False,
                               msg=lambda m: f"{what or 'values'} differ (rtol={rtol:g}, "
                                             f"atol={atol:g}):\n{m}")
