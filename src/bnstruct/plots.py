"""Figures of the reproduction (matplotlib, Agg backend; measurement lives elsewhere).

Every function takes tidy data (DataFrames / arrays), writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["linear_cost_figure", "norm_vs_depth_figure", "weight_spectra_figure",
           "sk1_vs_depth_figure", "rep_rank_figure", "bound_figure", "learning_rate_figure",
           "narrow_minima_figure", "symmetry_figure", "digits_figure"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG (integer ticks on every linear layer or depth axis) and close it."""
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        label = ax.get_xlabel().lower()
        if ax.get_xscale() == "linear" and label.startswith(("layer", "depth")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _cmap(n: int) -> list[Any]:
    plt = _plt()
    return [plt.cm.viridis(x) for x in np.linspace(0.05, 0.9, max(n, 1))]


def linear_cost_figure(depths: pd.DataFrame, layers: pd.DataFrame, path: Path) -> Path:
    """Left: trained ||theta||^2 vs linear_cost(A, L). Right: layer singular values vs
    s_i(A)^(1/L)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    a.plot(depths["depth"], depths["linear_cost"], "k-", label=r"$L\sum_i s_i(A)^{2/L}$")
    a.plot(depths["depth"], depths["param_norm2"], "o", color="C1", label=r"trained $\|\theta\|^2$")
    a.set(xlabel="depth L", ylabel=r"$\|\theta\|^2$", title="deep linear nets: cost vs theory")
    a.legend()
    nz = layers[layers["predicted"] > 0]
    for c, (L, g) in zip(_cmap(nz["depth"].nunique()), nz.groupby("depth"), strict=True):
        b.scatter(g["predicted"], g["s"], s=12, color=c, label=f"L={L}")
    lo, hi = float(nz["predicted"].min()) * 0.95, float(nz["predicted"].max()) * 1.05
    b.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    b.set(xlabel=r"predicted $s_i(A)^{1/L}$", ylabel=r"$s_i(W_\ell)$",
          title="every layer's singular values")
    b.legend(fontsize=8)
    return _save(fig, path)


def norm_vs_depth_figure(nets: pd.DataFrame, fit: Any, k: int, path: Path) -> Path:
    """||theta||^2 against L with the least-squares line and the slope-k reference."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4))
    L = nets["depth"].to_numpy(float)
    grid = np.linspace(0, L.max() * 1.05, 50)
    ax.plot(L, nets["param_norm2"], "o", color="C0", label="trained nets")
    ax.plot(grid, fit.R0 * grid + fit.R1, "C0-",
            label=rf"fit: $R_0$={fit.R0:.2f}$\pm${fit.R0_err:.2f}, $R_1$={fit.R1:.1f}")
    ax.plot(grid, k * grid + fit.R1 + (fit.R0 - k) * L.mean(), "k--", lw=1,
            label=f"slope k = {k}")
    ax.set(xlabel="depth L", ylabel=r"$\|\theta\|^2$", title=r"$\|\theta\|^2 \approx L R_0 + R_1$")
    ax.legend(fontsize=8)
    return _save(fig, path)


def weight_spectra_figure(layers: pd.DataFrame, k: int, path: Path) -> Path:
    """Top singular values of W_l per layer, one panel per depth."""
    plt = _plt()
    depths = sorted(layers["depth"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(3.2 * len(depths), 3.4), sharey=True,
                             squeeze=False)
    cols = [c for c in layers.columns if c.startswith("s") and c[1:].isdigit()]
    for ax, L in zip(axes[0], depths, strict=True):
        g = layers[layers["depth"] == L]
        for i, c in enumerate(cols):
            ax.plot(g["layer"], g[c], "o-", ms=3, lw=1,
                    color="C3" if i < k else ("C1" if i == k else "0.6"),
                    label=(f"$s_1..s_{k}$" if i == 0 else (f"$s_{k + 1}$" if i == k else
                           ("others" if i == k + 1 else None))))
        mid = g[g["middle"]]["layer"]
        ax.axvspan(mid.min() - 0.5, mid.max() + 0.5, color="0.9", zorder=0)
        ax.axhline(1, color="k", lw=0.6, ls=":")
        ax.set(xlabel="layer l", title=f"L = {L}", yscale="log")
    axes[0][0].set_ylabel(r"singular values of $W_\ell$")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def sk1_vs_depth_figure(summ: pd.DataFrame, k: int, slope: float, path: Path) -> Path:
    """Median s_{k+1} over middle layers vs L, log-log, with the fitted and the -1/2 slopes."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    L, s = summ["depth"].to_numpy(float), summ["s_k1"].to_numpy(float)
    ax.loglog(L, s, "o", label=rf"median $s_{{{k + 1}}}$ (middle layers)")
    if np.isfinite(slope) and np.all(s > 0):
        c = np.exp(np.mean(np.log(s) - slope * np.log(L)))
        ax.loglog(L, c * L ** slope, "C0-", label=f"fit: exponent {slope:.2f}")
        c2 = np.exp(np.mean(np.log(s) + 0.5 * np.log(L)))
        ax.loglog(L, c2 * L ** -0.5, "k--", lw=1, label="theory: exponent -1/2")
    ax.set(xlabel="depth L", ylabel=rf"$s_{{{k + 1}}}(W_\ell)$", title="small singular values")
    ax.legend(fontsize=8)
    return _save(fig, path)


def rep_rank_figure(layers: pd.DataFrame, k: int, path: Path) -> Path:
    """Effective rank of the centered representation per layer (relative position l/L)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    depths = sorted(layers["depth"].unique())
    for c, L in zip(_cmap(len(depths)), depths, strict=True):
        g = layers[layers["depth"] == L]
        ax.plot(g["layer"] / L, g["rep_rank"], "o-", ms=3, color=c, label=f"L={L}")
    ax.axhline(k, color="k", ls="--", lw=1, label=f"k = {k}")
    ax.set(xlabel=r"relative layer $\ell / L$", ylabel="effective rank (centered, PR)",
           title="representation rank per layer")
    ax.legend(fontsize=8)
    return _save(fig, path)


def bound_figure(bound: pd.DataFrame, nets: pd.DataFrame, k: int, path: Path) -> Path:
    """Left: lhs and rhs of the bottleneck inequality per net. Right: c1 vs L."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    for i, (L, g) in enumerate(bound.groupby("depth")):
        rhs = g["rhs"][np.isfinite(g["rhs"])]
        a.scatter(np.full(len(rhs), L) + np.random.default_rng(i).uniform(-.2, .2, len(rhs)),
                  rhs, s=4, color="C0", alpha=0.4, label="rhs per point" if i == 0 else None)
        a.plot([L - .4, L + .4], [g["lhs"].iloc[0]] * 2, "C3-", lw=2,
               label="lhs" if i == 0 else None)
    a.set(xlabel="depth L", ylabel="value", title=f"bottleneck inequality (k={k}): lhs <= rhs")
    a.legend(fontsize=8)
    b.plot(nets["depth"], nets["c1"], "o-")
    b.set(xlabel="depth L", ylabel=r"$c_1 = \|\theta\|^2 - kL$", title="c1 per depth")
    return _save(fig, path)


def learning_rate_figure(df: pd.DataFrame, path: Path) -> Path:
    """Left: NTK top eigenvalue / (N L) vs c with the stability bound 1/c. Right: Hessian top
    eigenvalue vs 2/lr."""
    plt = _plt()
    ok = df[df["status"] == "completed"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    depths = sorted(df["depth"].unique())
    for c, L in zip(_cmap(len(depths)), depths, strict=True):
        g = ok[ok["depth"] == L]
        a.loglog(g["c"], g["ntk_per_NL"], "o-", color=c, label=f"L={L}")
        b.loglog(g["two_over_lr"], g["hessian_max"], "o", color=c, label=f"L={L}")
    cs = np.array(sorted(df["c"].unique()), float)
    a.loglog(cs, 1 / cs, "k--", lw=1, label="stability bound 1/c")
    a.set(xlabel="c  (lr = c / L)", ylabel=r"$\lambda_{max}(\Theta) / (NL)$",
          title="NTK at the end of GD")
    a.legend(fontsize=8)
    t = np.array([ok["two_over_lr"].min(), ok["two_over_lr"].max()]) if len(ok) else cs
    b.loglog(t, t, "k--", lw=1, label="2 / lr")
    b.set(xlabel="2 / lr", ylabel=r"$\lambda_{max}$(Hessian)", title="sharpness vs 2/lr")
    b.legend(fontsize=8)
    return _save(fig, path)


def narrow_minima_figure(df: pd.DataFrame, path: Path) -> Path:
    """NTK top eigenvalue / (N L) of the rank-k and the rank-1 solutions."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    bars = ax.bar(df["solution"], df["ntk_per_NL"], color=["C0", "C3"])
    ax.bar_label(bars, fmt="%.3g")  # a linear axis from 0: bar heights compare honestly
    ax.set(ylim=(0, 1.12 * float(df["ntk_per_NL"].max())),
           ylabel=r"$\lambda_{max}(\Theta) / (NL)$",
           title=f"same task, depth {int(df['depth'].iloc[0])}")
    return _save(fig, path)


def symmetry_figure(pca: np.ndarray, inv: np.ndarray, layer: int, layers: pd.DataFrame,
                    path: Path) -> Path:
    """Bottleneck-layer PCA of held-out points coloured by each invariant, and the
    representation rank per layer."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, j, lab in ((axes[0], 0, r"$r = \sqrt{x_1^2 + x_2^2}$"), (axes[1], 1, "$x_3$")):
        sc = ax.scatter(pca[:, 0], pca[:, 1], c=inv[:, j], s=8, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=lab)
        ax.set(xlabel="PC 1", ylabel="PC 2", title=f"layer {layer} coloured by {lab}")
    axes[2].plot(layers["layer"], layers["rep_rank"], "o-")
    axes[2].axhline(2, color="k", ls="--", lw=1)
    axes[2].set(xlabel="layer l", ylabel="effective rank (centered, PR)",
                title="representation rank")
    return _save(fig, path)


def digits_figure(layers: pd.DataFrame, nets: pd.DataFrame, path: Path) -> Path:
    """Representation rank per layer for each depth on digits."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    depths = sorted(layers["depth"].unique())
    for c, L in zip(_cmap(len(depths)), depths, strict=True):
        g = layers[layers["depth"] == L]
        acc = float(nets.loc[nets["depth"] == L, "test_accuracy"].iloc[0])
        ax.plot(g["layer"] / L, g["rep_rank"], "o-", ms=3, color=c,
                label=f"L={L} (test acc {acc:.2f})")
    ax.set(xlabel=r"relative layer $\ell / L$", ylabel="effective rank (centered, PR)",
           title="digits: representation rank")
    ax.legend(fontsize=8)
    return _save(fig, path)
