"""The leaky-ResNet claims' figures (drawn on axes passed in; ``*_figure`` saves one file),
from the tables of :class:`~bnstruct.experiments._leaky.LeakyResult`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import plots

__all__ = ["hamiltonian_figure", "coi_figure", "timescales_figure", "structure_figure",
           "balance_figure", "adaptive_figure"]


def _equal(layers: pd.DataFrame) -> pd.DataFrame:
    return layers[~layers["adaptive"].astype(bool)]


def _by_leak(layers: pd.DataFrame) -> list[tuple[float, pd.DataFrame, Any]]:
    leaks = sorted(_equal(layers)["leak"].unique())
    colors = plots._colors(len(leaks))
    return [(float(Lt), _equal(layers)[_equal(layers)["leak"] == Lt], c)
            for Lt, c in zip(leaks, colors, strict=True)]


def _lines(ax: Any, g: pd.DataFrame, x: str, y: str, color: Any, label: str, **kw: Any) -> None:
    """One line per seed (the first labelled)."""
    for i, (_, h) in enumerate(g.groupby("seed")):
        ax.plot(h[x], h[y], color=color, label=label if i == 0 else None, alpha=0.85, **kw)


def draw_energies(ax: Any, layers: pd.DataFrame) -> None:
    """Kinetic (solid) and potential (dashed) energy along p, every leak and seed (log y)."""
    for Lt, g, c in _by_leak(layers):
        _lines(ax, g, "p_in", "kinetic", c, f"kinetic, Lt = {Lt:g}")
        _lines(ax, g, "p_in", "potential", c, f"potential, Lt = {Lt:g}", ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("p (depth, the step's input)")
    ax.set_ylabel("energy")
    ax.set_title("kinetic (solid) and potential (dashed)")
    ax.legend(fontsize=7, ncol=2)


def draw_h(ax: Any, layers: pd.DataFrame) -> None:
    """H along p, every leak and seed (linear y)."""
    for Lt, g, c in _by_leak(layers):
        _lines(ax, g, "p_in", "hamiltonian", c, f"Lt = {Lt:g}", marker=".")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("p (depth, the step's input)")
    ax.set_ylabel("H = kinetic - potential")
    ax.set_title("Hamiltonian along depth")
    ax.legend(fontsize=8)


def hamiltonian_figure(layers: pd.DataFrame, path: Path) -> Path:
    fig = plots.new_figure((10, 3.8))
    a, b = fig.subplots(1, 2)
    draw_energies(a, layers)
    draw_h(b, layers)
    return plots.save_figure(fig, path)


def draw_coi_profile(ax: Any, layers: pd.DataFrame, k: int) -> None:
    for Lt, g, c in _by_leak(layers):
        _lines(ax, g, "p", "coi", c, f"Lt = {Lt:g}", marker=".")
    ax.axhline(k, color="k", ls=":", lw=1, label=f"k* = {k}")
    ax.set_yscale("log")
    ax.set_xlabel("p (depth)")
    ax.set_ylabel("COI(A_p)")
    ax.set_title("Cost of Identity along depth")
    ax.legend(fontsize=8)


def draw_coi_limits(ax: Any, nets: pd.DataFrame, k: int) -> None:
    eq = nets[~nets["adaptive"].astype(bool)]
    for col, lab, mk in (("coi_min", "min_p COI", "o"), ("minus_2H_over_leak", "-2H/Lt", "s")):
        x, m, se = plots._mean_se_by(eq, "leak", col)
        ax.errorbar(x, m, yerr=se, marker=mk, capsize=3, label=lab)
        ax.scatter(eq["leak"], eq[col], s=8, color="0.6", zorder=0)
    ax.axhline(k, color="k", ls=":", lw=1, label=f"k* = {k}")
    ax.set_xlabel("Lt (leak)")
    ax.set_ylabel("value")
    ax.set_title("min COI falls, -2H/Lt rises, toward k*")
    ax.legend(fontsize=8)


def coi_figure(layers: pd.DataFrame, nets: pd.DataFrame, k: int, path: Path) -> Path:
    fig = plots.new_figure((10, 3.8))
    a, b = fig.subplots(1, 2)
    draw_coi_profile(a, layers, k)
    draw_coi_limits(b, nets, k)
    return plots.save_figure(fig, path)


def draw_speed(ax: Any, layers: pd.DataFrame) -> None:
    """||dA/dp||_K along p (solid) and the Hamiltonian's prediction
    Lt sqrt(COI - min COI) (dotted), one seed per leak."""
    for Lt, g, c in _by_leak(layers):
        h = g[g["seed"] == g["seed"].min()]
        ax.plot(h["p_in"], h["speed_K"], color=c, marker=".", label=f"Lt = {Lt:g}")
        pred = Lt * np.sqrt(np.maximum(h["coi_in"] - g["coi"].min(), 0))
        ax.plot(h["p_in"], pred, color=c, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("p (depth, the step's input)")
    ax.set_ylabel("||dA/dp||_K")
    ax.set_title("speed (solid) and Lt sqrt(COI - min COI) (dotted)")
    ax.legend(fontsize=8)


def draw_speed_vs_leak(ax: Any, nets: pd.DataFrame) -> None:
    for col, lab, mk in (("speed_ends", "ends (first, last layer)", "o"),
                         ("speed_middle", "middle layers (median)", "s")):
        x, m, se = plots._mean_se_by(nets, "leak", col)
        ax.errorbar(x, m, yerr=se, marker=mk, capsize=3, label=lab)
    x = np.array(sorted(nets["leak"].unique()), float)
    ax.plot(x, x * float(nets["speed_ends"].median() / nets["leak"].median()), "k:", lw=1,
            label="proportional to Lt")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plots._plain_log_ticks(ax)
    ax.set_xlabel("Lt (leak)")
    ax.set_ylabel("||dA/dp||_K")
    ax.set_title("two timescales")
    ax.legend(fontsize=8)


def timescales_figure(layers: pd.DataFrame, nets: pd.DataFrame, path: Path) -> Path:
    fig = plots.new_figure((10, 3.8))
    a, b = fig.subplots(1, 2)
    draw_speed(a, layers)
    draw_speed_vs_leak(b, nets)
    return plots.save_figure(fig, path)


def _spectrum_map(ax: Any, spectra: list[np.ndarray], p: np.ndarray, title: str,
                  k: int, top: int = 8) -> None:
    S = np.array([np.pad(s[:top], (0, max(0, top - s[:top].size)), constant_values=np.nan)
                  for s in spectra])
    for i in range(top):
        ax.plot(p, S[:, i], marker=".", lw=1.5 if i < k else 0.8,
                color="C0" if i < k else "0.55")
    ax.set_yscale("log")
    ax.set_xlabel("p (depth)")
    ax.set_ylabel(f"top {top} singular values")
    ax.set_title(title)


def structure_figure(spectra: tuple[list[np.ndarray], list[np.ndarray]], layer: pd.DataFrame,
                     k: int, leak: float, path: Path) -> Path:
    """Spectra of W_p (relu part) and of the centered A_p along p, one net at ``leak``
    (the first k values in blue), and ||A - relu A|| / ||A|| along p."""
    fig = plots.new_figure((13.5, 3.8))
    a, b, c = fig.subplots(1, 3)
    p = layer["p"].to_numpy(float)
    _spectrum_map(a, spectra[0], p, f"W_p at Lt = {leak:g}", k)
    _spectrum_map(b, [s / s[0] if s.size and s[0] > 0 else s for s in spectra[1]], p,
                  f"A_p (centered, / s1) at Lt = {leak:g}", k)
    c.plot(p, layer["nonneg_gap"], marker=".")
    c.set_xlabel("p (depth)")
    c.set_ylabel("||A - relu A|| / ||A||")
    c.set_title("distance from non-negative")
    return plots.save_figure(fig, path)


def balance_figure(layers: pd.DataFrame, leak: float, path: Path) -> Path:
    """||W_p||^2, Lt int_0^p ||b||^2 and their difference along p at ``leak`` (every seed)."""
    fig = plots.new_figure((5.5, 3.8))
    ax = fig.subplots()
    g = _equal(layers)
    g = g[g["leak"] == leak]
    for i, (_, h) in enumerate(g.groupby("seed")):
        lab = i == 0
        ax.plot(h["p"], h["w_norm2"], "C0", label="||W_p||^2" if lab else None)
        ax.plot(h["p"], h["w_norm2"] - h["balance"], "C1",
                label="Lt int_0^p ||b||^2" if lab else None)
        ax.plot(h["p"], h["balance"], "C2", lw=2, label="difference (conserved)" if lab
                else None)
    ax.set_xlabel("p (depth)")
    ax.set_ylabel("value")
    ax.set_title(f"balancedness at Lt = {leak:g}")
    ax.legend(fontsize=8)
    return plots.save_figure(fig, path)


def adaptive_figure(layers: pd.DataFrame, nets: pd.DataFrame, leak: float, path: Path
                    ) -> Path:
    """Final layer steps rho_l of the adaptive nets against the layer (equal: 1/L), and the
    test error of both (mean and standard error over seeds)."""
    fig = plots.new_figure((10, 3.8))
    a, b = fig.subplots(1, 2)
    ad = layers[layers["adaptive"].astype(bool) & (layers["leak"] == leak)]
    for i, (_, h) in enumerate(ad.groupby("seed")):
        a.plot(h["layer"], h["rho"], marker=".", color="C1",
               label="adaptive (each seed)" if i == 0 else None)
    L = int(layers["layer"].max())
    a.axhline(1 / L, color="C0", label="equal 1/L")
    a.set_xlabel("layer")
    a.set_ylabel("layer step rho_l")
    a.set_title(f"where the layers go (Lt = {leak:g})")
    a.legend(fontsize=8)
    sel = nets[nets["leak"] == leak]
    names = ["equal", "adaptive"]
    vals = [sel[sel["adaptive"].astype(bool) == (n == "adaptive")]["rel_test_error"]
            .to_numpy(float) for n in names]
    m = [float(v.mean()) for v in vals]
    se = [float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0 for v in vals]
    b.bar(names, m, yerr=se, capsize=4, color=["C0", "C1"])
    for i, v in enumerate(vals):
        b.scatter(np.full(v.size, i), v, color="k", s=10, zorder=3)
    b.set_ylabel("relative test error")
    b.set_title("test error (mean ± SE, seeds as dots)")
    return plots.save_figure(fig, path)
