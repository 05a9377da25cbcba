"""Shared fixtures (the case registry lives in ``cases.py``)."""

from __future__ import annotations

import signal

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


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_deliverable():
    """Python's Ctrl-C handling in this process and the processes it starts. A shell that
    starts a job in the background without job control (``cmd &`` in a script) starts it
    with SIGINT ignored, and ignored signals are inherited: the Ctrl-C tests would then test
    the shell, not bnstruct. A handler set here is reset to the default on ``exec``, so
    subprocesses start with Python's handling too."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(autouse=True)
def figures_are_readable(monkeypatch):
    """Every figure a test saves through :func:`bnstruct.plots.save_figure` (every claim
    figure) has no panel narrower than :data:`~bnstruct.plots.MIN_PANEL_INCHES`."""
    from bnstruct import plots

    real = plots.save_figure

    def checked(fig, path, **kw):
        out = real(fig, path, **kw)
        narrow = plots.narrow_panels(fig)
        assert not narrow, f"{path}: panels narrower than {plots.MIN_PANEL_INCHES} in: {narrow}"
        return out
    monkeypatch.setattr(plots, "save_figure", checked)
