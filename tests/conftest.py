"""Shared fixtures (the case registry lives in ``cases.py``)."""

from __future__ import annotations

import pytest
import torch
from cases import NET_CASES, build, case_id


@pytest.fixture(params=NET_CASES, ids=case_id)
def tiny_net(request: pytest.FixtureRequest):
    return build(request.param)


@pytest.fixture
def one_thread():
    """One PyTorch thread for the test (batched/executor tests time and compare runs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
