"""Shared fixtures (the case registry lives in ``cases.py``)."""

from __future__ import annotations

import pytest
from cases import NET_CASES, build, case_id


@pytest.fixture(params=NET_CASES, ids=case_id)
def tiny_net(request: pytest.FixtureRequest):
    return build(request.param)
