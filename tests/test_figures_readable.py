"""Figures one would put in a paper: no panel narrower than
:data:`bnstruct.plots.MIN_PANEL_INCHES` at its saved size (checked on every figure a test
saves, by ``conftest.figures_are_readable``), error bars where there are seeds. The claim
figures not drawn by another test are drawn here from small synthetic tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bnstruct import plots


def test_narrow_panels_are_found():
    fig = plots.new_figure((6, 3))
    fig.subplots(1, 3)
    fig.canvas.draw()
    assert len(plots.narrow_panels(fig)) == 3
    fig = plots.new_figure((7, 3))
    fig.subplots()
    fig.canvas.draw()
    assert plots.narrow_panels(fig) == []


def test_linear_and_narrow_minima_figures(tmp_path):
    rng = np.random.default_rng(0)
    depths = pd.DataFrame({"depth": [2, 2, 4, 4], "seed": [0, 1, 0, 1],
                           "param_norm2": [5.0, 5.1, 9.9, 10.2],
                           "linear_cost": [5.0, 5.0, 10.0, 10.0]})
    layers = pd.DataFrame({"depth": [2] * 4 + [4] * 4, "predicted": rng.uniform(0.5, 2, 8)})
    layers["s"] = layers["predicted"] * (1 + 0.01 * rng.standard_normal(8))
    assert plots.linear_cost_figure(depths, layers, tmp_path / "l.png").exists()
    df = pd.DataFrame({"solution": ["rank 2"] * 3 + ["rank 1"] * 3, "depth": 8,
                       "ntk_per_NL": [10.0, 11.0, 12.0, 40.0, 60.0, 80.0]})
    fig = plots.new_figure((4.4, 3.8))
    ax = fig.subplots()
    plots.draw_narrow_minima(ax, df)
    assert len(ax.containers) == 2  # the bars and their error bars (seeds: standard error)
    assert plots.narrow_minima_figure(df, tmp_path / "n.png").exists()


def test_history_figure_marks_the_stages(tmp_path):
    h = pd.DataFrame({"step": np.arange(0, 600, 50), "stage": [0] * 4 + [1] * 4 + [2] * 4})
    h["objective"] = np.linspace(2, 0.2, 12)
    h["rel_fit"] = np.linspace(1, 0.02, 12)
    h["param_norm2"] = np.linspace(300, 30, 12)
    fig = plots.new_figure((8, 3))
    ax = fig.subplots()
    plots.draw_history(ax, h, "objective")
    assert len(ax.lines) == 3  # the curve and two stage boundaries
    assert [t.get_text() for t in ax.texts] == ["stage 2", "stage 3"]
    assert plots.history_figure({"a": h, "b": h}, tmp_path / "h.png").exists()


@pytest.mark.parametrize("n", [1, 3, 6])
def test_weight_spectra_grid_keeps_panels_readable(n, tmp_path):
    from types import SimpleNamespace

    nets = pd.DataFrame({"run": [f"r{i}" for i in range(n)], "depth": range(4, 4 + n),
                         "seed": 0})
    spectra = {f"r{i}": [np.array([1.2, 1.0, 0.1])] * (4 + i) for i in range(n)}
    res = SimpleNamespace(nets=nets, spectra=spectra, k=2)
    assert plots.weight_spectra_figure(res, tmp_path / "w.png").exists()
