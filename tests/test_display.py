"""How results show themselves: ``repr(Analysis)`` is one short line, ``_repr_html_`` a short
summary (not a DataFrame dump) with the convergence warning; training progress in a notebook."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

import bnstruct as bn
from bnstruct.training import _progress


def _analysis(**kw):
    t = bn.tasks.composite(n_train=64, k=2, seed=0)
    m = bn.MLP(t.d_in, width=8, depth=4, d_out=t.d_out, seed=0)
    return bn.analyze(m, t.X, 2, ntk=False, **({"Y": t.Y, "lam": 0.005} | kw))


def test_repr_is_one_short_line():
    a = _analysis()
    r = repr(a)
    assert "\n" not in r and len(r) < 200 and r.startswith("Analysis(chain of 4")
    assert "WARNING: not converged" in r  # an untrained net


def test_repr_html_is_a_short_summary_with_the_warning():
    a = _analysis()
    h = a._repr_html_()
    tags: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append(tag)
    P().feed(h)
    assert tags.count("tr") <= 10  # a summary, not the per-layer table
    assert "warning:" in h and "not converged" in h
    assert ".layers" in h and "4 rows" in h


def test_notebook_progress_updates_one_display(monkeypatch):
    shown: list = []

    class Handle:
        def update(self, obj):
            shown.append(obj)

    def display(obj, display_id=False):
        assert display_id
        shown.append(obj)
        return Handle()
    ipd = pytest.importorskip("IPython.display", reason="IPython is in the docs extras")
    monkeypatch.setattr(ipd, "display", display)
    bar = _progress.NotebookProgress(every=0.0)
    bar.start(100, 0)
    for step in (50, 100):
        bar.row(step, {"stage": 1, "lr": 4e-4, "lam": 0.005, "rel_fit": 0.02,
                       "param_norm2": 31.9})
    bar.close()
    last = shown[-1]
    assert "100/100" in repr(last) and "stage 2: lr 0.0004, lam 0.005" in repr(last)
    assert '<progress value="100" max="100"' in last._repr_html_()


def test_progress_defaults(monkeypatch):
    monkeypatch.setattr(_progress, "in_notebook", lambda: True)
    assert isinstance(_progress.default_observers(None, None)[0], _progress.NotebookProgress)
    assert _progress.default_observers(False, None) == []
    monkeypatch.setattr(_progress, "in_notebook", lambda: False)
    assert isinstance(_progress.default_observers(True, None)[0], _progress.ProgressBar)
