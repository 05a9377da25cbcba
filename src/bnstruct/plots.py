"""Figures of bnstruct (drawing only; every number comes from the measurements).

Two layers:

- ``draw_*(ax, ...)``: draw one panel on a Matplotlib ``Axes`` you pass in (any figure, any
  backend: a notebook's inline one, a GUI, a file). The per-network panels (weight spectra,
  rank profile, PCA) are shared by :func:`bnstruct.diagnostics.plot_analysis` and the claim
  figures.
- ``*_figure(..., path)``: the reproduction's figures; each builds a
  ``matplotlib.figure.Figure`` (the object API: no pyplot state, no backend change), draws its
  panels, writes one PNG and returns its path.

Nothing here calls ``matplotlib.use`` or imports ``matplotlib.pyplot``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .conventions import NEAR_ONE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    # panels (draw on the Axes you pass)
    "draw_weight_spectra", "draw_rank_profile", "draw_pca", "draw_norm_vs_depth",
    "draw_over_seeds", "draw_weight_structure", "draw_rank_over_seeds", "draw_bound",
    "draw_c1", "draw_ntk_vs_c", "draw_sharpness", "draw_narrow_minima", "draw_ntk_vs_depth",
    "draw_rep_convergence", "draw_cross_depth_cka", "draw_linear_cost",
    "draw_rank_per_layer",
    "draw_linear_singular_values",
    # figures of the reproduction (one PNG each)
    "new_figure", "save_figure", "narrow_panels", "MIN_PANEL_INCHES", "linear_cost_figure",
    "norm_vs_depth_figure",
    "weight_spectra_figure", "weight_structure_figure", "rep_rank_figure", "bound_figure",
    "learning_rate_figure", "representation_convergence_figure",
    "narrow_minima_figure", "symmetry_figure", "digits_figure",
    # the regime map
    "draw_regime_panel", "regime_figure",
    # training curves
    "draw_history", "history_figure",
]

#: rank columns of analyze's table drawn by :func:`draw_rank_profile` by default
REP_RANK_COLUMNS: dict[str, str] = {
    "rep_erank_entropy": "entropy", "rep_erank_participation": "participation",
    "rep_erank_threshold": "threshold", "rep_rank_numerical": "numerical rank"}


#: no panel of a saved figure is narrower than this at its saved size (inches): every figure
#: stays readable on a printed page (colorbars are not panels)
MIN_PANEL_INCHES = 3.0


def narrow_panels(fig: Figure, min_inches: float = MIN_PANEL_INCHES) -> list[str]:
    """The panels of ``fig`` (its axes, colorbars excluded) narrower than ``min_inches`` as
    laid out at the figure's size, as ``"<title or label>: <width> in"`` (call it after the
    figure was drawn or saved, when the layout engine has placed the axes)."""
    width = fig.get_figwidth()
    out = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>" or not ax.get_visible():
            continue
        w = ax.get_position().width * width
        if w < min_inches:
            out.append(f"{ax.get_title() or ax.get_xlabel() or '?'}: {w:.2f} in")
    return out


def new_figure(figsize: tuple[float, float], *,
               layout: Literal["constrained", "tight"] | None = "constrained") -> Figure:
    """A ``matplotlib.figure.Figure`` with an Agg canvas attached, outside pyplot (never shown,
    never registered with a backend: the user's backend is untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` (format from the suffix; integer ticks on every linear layer or depth
    axis) and return the path."""
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        label = ax.get_xlabel().lower()
        if ax.get_xscale() == "linear" and label.startswith(("layer", "depth")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=dpi)
    return path


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.05, 0.9, max(n, 1))]


# --------------------------------------------------------------------------- per-network panels


def draw_weight_spectra(ax: Axes, spectra: Sequence[Any], k: int, *,
                        middle: Sequence[int] | None = None, floor_rtol: float = 1e-4,
                        title: str | None = None, legend: bool = True) -> None:
    """Singular values of every ``W_l`` against the layer ``l = 1..L`` (log scale, floored at
    ``floor_rtol * s_max``: smaller values are drawn on the floor): all values as grey points,
    ``s_1..s_k`` and ``s_{k+1}`` as lines, the band :data:`~bnstruct.conventions.NEAR_ONE`
    shaded, a line at 1, and the ``middle`` layers (1-based) as a grey span.

    ``spectra``: one 1-d array per layer (e.g. ``Analysis.weight_spectra``)."""
    sv = [np.asarray(s, dtype=float).ravel() for s in spectra]
    layers = np.arange(1, len(sv) + 1)
    smax = max((float(s.max()) for s in sv if s.size), default=1.0)
    floor = floor_rtol * smax if smax > 0 else 1e-300
    for l, s in zip(layers, sv, strict=True):
        ax.scatter(np.full(s.size, l), np.maximum(s, floor), s=6, color="0.6", lw=0)
    for i in range(min(k + 1, max((s.size for s in sv), default=0))):
        ys = np.array([s[i] if i < s.size else np.nan for s in sv])
        top = i < k
        ax.plot(layers, np.maximum(ys, floor), "o-", ms=3, lw=1, color="C3" if top else "C1",
                label=(f"$s_1..s_{{{k}}}$" if i == 0 else None) if top
                else f"$s_{{{k + 1}}}$")
    ax.axhspan(NEAR_ONE[0], NEAR_ONE[1], color="C2", alpha=0.08, lw=0,
               label=f"near 1 [{NEAR_ONE[0]:g}, {NEAR_ONE[1]:g}]")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    if middle:
        ax.axvspan(min(middle) - 0.5, max(middle) + 0.5, color="0.9", zorder=0)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor * 0.7)
    ax.set(xlabel="layer l", ylabel=r"singular values of $W_\ell$")
    if title is not None:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize=7)


def draw_rank_profile(ax: Axes, layers: pd.DataFrame, *,
                      columns: Mapping[str, str] | Sequence[str] = REP_RANK_COLUMNS,
                      k: int | None = None, relative: bool = False, label: str | None = None,
                      color: Any = None, bottleneck: Sequence[int] | None = None,
                      log2: bool = False, title: str | None = None) -> None:
    """Representation ranks of analyze's ``layers`` table against the layer (``l`` or, with
    ``relative``, ``l / L``): one line per column (``columns``: names, or a mapping name ->
    legend label; ``label``/``color`` override them for a single column, e.g. one line per
    depth). A dashed line at ``k``; ``bottleneck = (first, last)`` shaded."""
    names = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    L = int(layers["layer"].max())
    x = layers["layer"].to_numpy(float) / (L if relative else 1)
    for col, lab in names.items():
        ax.plot(x, layers[col].to_numpy(float), "o-", ms=3, color=color,
                label=label if label is not None else lab)
    if k is not None:
        ax.axhline(k, color="k", ls="--", lw=0.8, label=f"k = {k}")
    if bottleneck:
        lo, hi = bottleneck
        s = 1 / L if relative else 1
        ax.axvspan((lo - 0.5) * s, (hi + 0.5) * s, color="C7", alpha=0.15, label="bottleneck")
    if log2:
        ax.set_yscale("log", base=2)
    ax.set(xlabel=r"relative layer $\ell / L$" if relative else "layer l",
           ylabel="rank of the centered representation")
    if title is not None:
        ax.set_title(title)


def draw_pca(ax: Axes, pca: Any, *, color: Any = None, color_label: str = "",
             title: str | None = None) -> Any:
    """The points in the top two principal directions (``pca``: ``[N, 2]``), coloured by
    ``color`` (``[N]`` values, with a colorbar labelled ``color_label``) or uniform. Returns the
    scatter artist."""
    from .errors import ConfigError

    P = np.asarray(pca, dtype=float)
    if color is None:
        sc = ax.scatter(P[:, 0], P[:, 1], s=8, color="C0")
    else:
        c = np.asarray(color.detach().cpu() if hasattr(color, "detach") else color, dtype=float)
        if c.shape != (len(P),):
            raise ConfigError(f"color must have one value per point ({len(P)}), got shape "
                              f"{c.shape}")
        sc = ax.scatter(P[:, 0], P[:, 1], s=8, c=c, cmap="viridis")
        ax.figure.colorbar(sc, ax=ax, label=color_label)
    ax.set(xlabel="PC 1", ylabel="PC 2")
    ax.set_aspect("equal", adjustable="datalim")
    if title is not None:
        ax.set_title(title)
    return sc


# --------------------------------------------------------------------------- claim panels


def draw_norm_vs_depth(ax: Axes, nets: pd.DataFrame, fit: Any, k: int) -> None:
    """``||theta||^2`` of every net against L (the mean per depth with its standard error over
    the seeds), the least-squares line over every net and the slope-k line."""
    L = nets["depth"].to_numpy(float)
    grid = np.linspace(0, L.max() * 1.05, 50)
    ax.plot(L, nets["param_norm2"], "o", ms=3, color="C0", alpha=0.35, label="every net")
    xm, m, se = _mean_se_by(nets, "depth", "param_norm2")
    ax.errorbar(xm, m, yerr=se, fmt="o", ms=4, capsize=3, color="C0",
                label="mean ± SE over seeds")
    ax.plot(grid, fit.R0 * grid + fit.R1, "C0-",
            label=rf"fit: $R_0$={fit.R0:.2f}$\pm${fit.R0_err:.2f}, $R_1$={fit.R1:.1f}")
    ax.plot(grid, k * grid + fit.R1 + (fit.R0 - k) * L.mean(), "k--", lw=1,
            label=f"slope k = {k}")
    ax.set(xlabel="depth L", ylabel=r"$\|\theta\|^2$", title=r"$\|\theta\|^2 \approx L R_0 + R_1$")
    ax.legend(fontsize=8)


def draw_over_seeds(ax: Axes, nets: pd.DataFrame, column: str, *, x: str = "depth",
                    label: str | None = None, color: Any = "C0") -> None:
    """One row per net (``x``, ``column``): every net as a faint point and, per ``x``, the
    mean over seeds with its standard error as an error bar (the seed spread)."""
    xs = nets[x].to_numpy(float)
    ax.plot(xs, nets[column].to_numpy(float), "o", ms=3, alpha=0.35, color=color, lw=0)
    xm, m, se = _mean_se_by(nets, x, column)
    ax.errorbar(xm, m, yerr=se, fmt="o-", ms=4, capsize=3, color=color, label=label)


def draw_weight_structure(axes: Sequence[Axes], nets: pd.DataFrame, k: int, eps: float,
                          quantile: float) -> None:
    """Claim 3 on three panels, from its per-net table (``off``, ``scaled``, ``C``,
    ``sk1_median``): the count of layers off the structure against L; the ``quantile`` of
    ``s_{k+1}`` over the middle layers times ``sqrt(L)`` with the theorem's ``sqrt(C_min)``;
    the median ``s_{k+1}`` (log-log) with an ``L^{-1/2}`` line for scale. Seed spread as
    error bars."""
    a, b, c = axes
    draw_over_seeds(a, nets, "off", label="per depth: mean ± SE over seeds")
    a.set(xlabel="depth L", ylabel="layers off the structure",
          title=rf"not {k} values near 1 or $s_{{{k + 1}}} > {eps:g}$")
    a.set_ylim(bottom=0)
    a.legend(fontsize=7)
    draw_over_seeds(b, nets, "scaled")
    cmin = float(nets["C"].min())
    if cmin > 0:
        b.axhline(np.sqrt(cmin), color="k", ls="--", lw=1, label=r"$\sqrt{C_{min}}$ (theorem)")
    b.set(xlabel="depth L", ylabel=rf"$q_{{{quantile:g}}}(s_{{{k + 1}}}) \sqrt{{L}}$",
          title="bounded across depths")
    b.set_ylim(bottom=0)
    b.legend(fontsize=7)
    pos = nets[nets["sk1_median"] > 0]
    draw_over_seeds(c, pos, "sk1_median")
    c.set_xscale("log")
    c.set_yscale("log")
    if len(pos):
        g = np.unique(pos["depth"].to_numpy(float))
        c.plot(g, float(pos["sk1_median"].max()) * (g / g[0]) ** -0.5, "k--", lw=1,
               label=r"$\propto L^{-1/2}$ (scale of the bound)")
        c.legend(fontsize=7)
    _depth_ticks(c, pos["depth"])
    _plain_log_ticks(c, "y")
    c.set(xlabel="depth L", ylabel=rf"median $s_{{{k + 1}}}$ (middle layers)",
          title="finding: small singular values")


def draw_bound(ax: Axes, bound: pd.DataFrame, k: int) -> None:
    """Both sides of the bottleneck inequality per depth: the right side per point (jittered),
    the left side per net."""
    for i, (L, g) in enumerate(bound.groupby("depth")):
        rhs = g["rhs"][np.isfinite(g["rhs"])]
        ax.scatter(np.full(len(rhs), L) + np.random.default_rng(i).uniform(-.2, .2, len(rhs)),
                   rhs, s=4, color="C0", alpha=0.4, label="rhs per point" if i == 0 else None)
        for j, lhs in enumerate(g.groupby("seed")["lhs"].first() if "seed" in g
                                else [g["lhs"].iloc[0]]):
            ax.plot([L - .4, L + .4], [lhs] * 2, "C3-", lw=2,
                    label="lhs per net" if i == 0 and j == 0 else None)
    ax.set(xlabel="depth L", ylabel="value", title=f"bottleneck inequality (k={k}): lhs <= rhs")
    ax.legend(fontsize=8)


def draw_c1(ax: Axes, nets: pd.DataFrame) -> None:
    """``c1 = ||theta||^2 - kL`` of every net against L: every net as a faint point, the mean
    per depth with its standard error over the seeds."""
    draw_over_seeds(ax, nets, "c1", label="mean ± SE over seeds")
    ax.set(xlabel="depth L", ylabel=r"$c_1 = \|\theta\|^2 - kL$",
           title="c1 per depth (O(1) in the theory's regime)")
    ax.legend(fontsize=8)


def draw_ntk_vs_c(ax: Axes, df: pd.DataFrame) -> None:
    """NTK top eigenvalue / (N L) against c (``lr = c/L``), one line per depth, and 1/c."""
    ok = df[df["status"] == "completed"]
    depths = sorted(df["depth"].unique())
    for col, L in zip(_colors(len(depths)), depths, strict=True):
        g = ok[ok["depth"] == L]
        ax.loglog(g["c"], g["ntk_per_NL"], "o-", color=col, label=f"L={L}")
    cs = np.array(sorted(df["c"].unique()), float)
    ax.loglog(cs, 1 / cs, "k--", lw=1, label="stability bound 1/c")
    ax.set(xlabel="c  (lr = c / L)", ylabel=r"$\lambda_{max}(\Theta) / (NL)$",
           title="NTK at the end of GD")
    ax.legend(fontsize=8)


def draw_sharpness(ax: Axes, df: pd.DataFrame) -> None:
    """Hessian top eigenvalue against 2/lr, one colour per depth."""
    ok = df[df["status"] == "completed"]
    depths = sorted(df["depth"].unique())
    for col, L in zip(_colors(len(depths)), depths, strict=True):
        g = ok[ok["depth"] == L]
        ax.loglog(g["two_over_lr"], g["hessian_max"], "o", color=col, label=f"L={L}")
    if len(ok):
        t = np.array([ok["two_over_lr"].min(), ok["two_over_lr"].max()])
        ax.loglog(t, t, "k--", lw=1, label="2 / lr")
    ax.set(xlabel="2 / lr", ylabel=r"$\lambda_{max}$(Hessian)", title="sharpness vs 2/lr")
    _plain_log_ticks(ax)
    ax.legend(fontsize=8)


def draw_narrow_minima(ax: Axes, df: pd.DataFrame) -> None:
    """NTK top eigenvalue / (N L) of the rank-k and rank-1 solutions: bars at the mean over
    seeds with standard-error bars (linear axis from 0), every seed as a point."""
    sols = list(dict.fromkeys(df["solution"]))
    vals = [df.loc[df["solution"] == s, "ntk_per_NL"].to_numpy(float) for s in sols]
    means = [float(v.mean()) for v in vals]
    ses = [float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0 for v in vals]
    bars = ax.bar(sols, means, yerr=ses, capsize=6, color=["C0", "C3"][:len(sols)], alpha=0.8,
                  error_kw={"elinewidth": 1.2}, label="mean ± SE over seeds")
    ax.bar_label(bars, labels=[f"{m:.3g} ± {e:.2g}" for m, e in zip(means, ses, strict=True)],
                 padding=3)
    for i, s in enumerate(sols):
        v = df.loc[df["solution"] == s, "ntk_per_NL"].to_numpy(float)
        ax.plot(np.full(v.size, i), v, "k.", ms=5)
    top = max(float(df["ntk_per_NL"].max()), max(m + e for m, e in zip(means, ses, strict=True)))
    ax.set(ylim=(0, 1.18 * top),
           ylabel=r"$\lambda_{max}(\Theta) / (NL)$",
           title=f"same task, depth {int(df['depth'].iloc[0])}")


def draw_linear_cost(ax: Axes, depths: pd.DataFrame) -> None:
    """Trained ``||theta||^2`` of every net against ``linear_cost(A, L)`` (the line: its mean
    over the seeds per depth)."""
    cost = depths.groupby("depth")["linear_cost"].mean()
    ax.plot(cost.index, cost.to_numpy(), "k-",
            label=r"$L\sum_i s_i(A)^{2/L}$ (mean over seeds)")
    ax.plot(depths["depth"], depths["param_norm2"], "o", color="C1", alpha=0.7,
            label=r"trained $\|\theta\|^2$, every net")
    ax.set(xlabel="depth L", ylabel=r"$\|\theta\|^2$", title="deep linear nets: cost vs theory")
    ax.legend()


def draw_linear_singular_values(ax: Axes, layers: pd.DataFrame) -> None:
    """Every layer's singular values against the prediction ``s_i(A)^(1/L)``."""
    nz = layers[layers["predicted"] > 0]
    for col, (L, g) in zip(_colors(nz["depth"].nunique()), nz.groupby("depth"), strict=True):
        ax.scatter(g["predicted"], g["s"], s=12, color=col, label=f"L={L}")
    lo, hi = float(nz["predicted"].min()) * 0.95, float(nz["predicted"].max()) * 1.05
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(xlabel=r"predicted $s_i(A)^{1/L}$", ylabel=r"$s_i(W_\ell)$",
           title="every layer's singular values")
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------- claim figures


def linear_cost_figure(depths: pd.DataFrame, layers: pd.DataFrame, path: Path) -> Path:
    fig = new_figure((9, 3.8))
    a, b = fig.subplots(1, 2)
    draw_linear_cost(a, depths)
    draw_linear_singular_values(b, layers)
    return save_figure(fig, path)


def norm_vs_depth_figure(nets: pd.DataFrame, fit: Any, k: int, path: Path) -> Path:
    fig = new_figure((5.2, 4))
    draw_norm_vs_depth(fig.subplots(), nets, fit, k)
    return save_figure(fig, path)


def weight_spectra_figure(res: Any, path: Path) -> Path:
    """One panel per depth, two per row: the weight spectra of the sweep's first seed at that
    depth (``res``: a :class:`~bnstruct.experiments._sweep.SweepResult`)."""
    from .conventions import middle_layers

    nets = res.nets.sort_values(["depth", "seed"])
    first = nets.groupby("depth").head(1)
    ncols = min(2, len(first))
    nrows = -(-len(first) // ncols)
    fig = new_figure((4.6 * ncols, 3.4 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for i, (ax, r) in enumerate(zip(axes, first.itertuples(), strict=False)):
        L = int(r.depth)
        draw_weight_spectra(ax, res.spectra[r.run], res.k, middle=middle_layers(L),
                            title=f"L = {L}, seed {int(r.seed)}", legend=i == 0)
        if i % ncols:
            ax.set_ylabel("")
    for ax in axes[len(first):]:
        ax.set_visible(False)
    return save_figure(fig, path)


def weight_structure_figure(nets: pd.DataFrame, k: int, eps: float, quantile: float,
                            path: Path) -> Path:
    fig = new_figure((13, 3.8))
    draw_weight_structure(fig.subplots(1, 3), nets, k, eps, quantile)
    return save_figure(fig, path)


def draw_rank_over_seeds(ax: Axes, layers: pd.DataFrame, column: str, *,
                         labels: Mapping[int, str] | None = None, k: int | None = None) -> None:
    """A per-layer column of a sweep's layer table against the relative layer ``l/L``: one
    line per depth (the mean over its seeds) with a band from the smallest to the largest
    seed; ``labels`` (depth -> legend text) override ``"L=..."``; a dashed line at ``k``."""
    depths = sorted(layers["depth"].unique())
    for c, L in zip(_colors(len(depths)), depths, strict=True):
        g = layers[layers["depth"] == L].groupby("layer")[column]
        x = g.mean().index.to_numpy(float) / L
        ax.plot(x, g.mean().to_numpy(float), "o-", ms=3, color=c,
                label=(labels or {}).get(int(L), f"L={L}"))
        ax.fill_between(x, g.min().to_numpy(float), g.max().to_numpy(float), color=c,
                        alpha=0.15, lw=0)
    if k is not None:
        ax.axhline(k, color="k", ls="--", lw=1, label=f"k = {k}")
    ax.set_yscale("log", base=2)
    ax.set(xlabel=r"relative layer $\ell / L$",
           ylabel="dimension of the centered representation")


def rep_rank_figure(layers: pd.DataFrame, k: int, path: Path) -> Path:
    """Per layer (relative position ``l/L``), one line per depth with a band over its seeds
    (min to max): the energy rank of the centered representation (claim 4's measure) and its
    participation ratio (reported; below k when anisotropic)."""
    fig = new_figure((11, 3.8))
    a, b = fig.subplots(1, 2, sharex=True)
    draw_rank_over_seeds(a, layers, "rep_energy_rank", k=k)
    a.set_title("energy rank (all but 1% of the energy)")
    a.legend(fontsize=7, ncol=2)
    draw_rank_over_seeds(b, layers, "rep_erank_participation", k=k)
    b.set_title("participation ratio (reported)")
    return save_figure(fig, path)


def bound_figure(bound: pd.DataFrame, nets: pd.DataFrame, k: int, path: Path) -> Path:
    fig = new_figure((9, 3.8))
    a, b = fig.subplots(1, 2)
    draw_bound(a, bound, k)
    draw_c1(b, nets)
    return save_figure(fig, path)


def learning_rate_figure(df: pd.DataFrame, path: Path) -> Path:
    """Claim 6: the NTK against depth per c and for the small-lr runs (mean +- SE over seeds)
    and the sharpness of the large-lr runs against 2/lr."""
    fig = new_figure((10, 3.8))
    a, b = fig.subplots(1, 2)
    draw_ntk_vs_depth(a, df)
    large = df[df["protocol"] != "small-lr Adam"] if "protocol" in df else df
    draw_sharpness(b, large)
    return save_figure(fig, path)


def _mean_se_by(g: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct ``x``: mean of ``y`` and its standard error over the rows (0 for one)."""
    xs, ms, ses = [], [], []
    for v, h in g.groupby(x):
        a = h[y].to_numpy(float)
        a = a[np.isfinite(a)]
        if not a.size:
            continue
        xs.append(float(v))
        ms.append(float(a.mean()))
        ses.append(float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0)
    return np.array(xs), np.array(ms), np.array(ses)


def _plain_log_ticks(ax: Axes, axis: Literal["x", "y", "both"] = "both") -> None:
    """On log axes: ticks at 1, 2, 5 times powers of ten labelled as plain numbers, no
    labelled minor ticks (matplotlib's ``2x10^2, 3x10^2, ...`` minor labels overlap when an
    axis spans about one decade)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for a, on in ((ax.xaxis, axis in ("x", "both")), (ax.yaxis, axis in ("y", "both"))):
        if on and a.get_scale() == "log":
            a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            a.set_major_formatter(fmt)
            a.set_minor_formatter(NullFormatter())


def _depth_ticks(ax: Axes, depths: Any) -> None:
    """On a log x axis: one plain-number tick per depth, no minor ticks."""
    from matplotlib.ticker import NullFormatter, NullLocator

    d = sorted({int(x) for x in np.asarray(depths, float) if np.isfinite(x)})
    if d:
        ax.set_xticks(d, [str(x) for x in d])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())


def draw_ntk_vs_depth(ax: Axes, df: pd.DataFrame) -> None:
    """Learning-rate claim: :math:`\\lambda_{max}(\\Theta)/(NL)` against L (log-log), one
    line per c of the large-lr GD runs with its bound 1/c (dashed, same colour), and the
    small-lr runs (``protocol == "small-lr Adam"``) in red; error bars: mean +- SE over
    seeds, every run as a faint point."""
    ok = df[df["status"] == "completed"]
    small = ok["protocol"] == "small-lr Adam" if "protocol" in ok else np.zeros(len(ok), bool)
    cs = sorted(float(c) for c in ok.loc[~small, "c"].dropna().unique())
    for col, c in zip(_colors(len(cs)), cs, strict=True):
        g = ok[~small & (ok["c"] == c)]
        L, m, se = _mean_se_by(g, "depth", "ntk_per_NL")
        ax.errorbar(L, m, yerr=se, fmt="o-", color=col, capsize=3, label=f"GD, c={c:g}")
        ax.plot(g["depth"], g["ntk_per_NL"], ".", color=col, alpha=0.3)
        ax.axhline(1 / c, color=col, ls="--", lw=1)
    g = ok[small]
    if len(g):
        L, m, se = _mean_se_by(g, "depth", "ntk_per_NL")
        ax.errorbar(L, m, yerr=se, fmt="s-", color="C3", capsize=3, label="small lr (Adam)")
        ax.plot(g["depth"], g["ntk_per_NL"], ".", color="C3", alpha=0.3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _depth_ticks(ax, df["depth"])
    _plain_log_ticks(ax, "y")
    ax.set(xlabel="depth L", ylabel=r"$\lambda_{max}(\Theta) / (NL)$",
           title="NTK / (NL) vs depth (dashed: 1/c)")
    ax.legend(fontsize=8)


def draw_rep_convergence(ax: Axes, nets: pd.DataFrame) -> None:
    """Representation-convergence claim: per-net median over consecutive middle-layer pairs
    of ``1 - CKA`` (column ``median_d``) against L, log-log: every net as a faint point, mean
    +- SE over seeds as error bars, and the OLS fit over every net."""
    L, m, se = _mean_se_by(nets, "depth", "median_d")
    ax.plot(nets["depth"], nets["median_d"], ".", color="C0", alpha=0.4)
    ax.errorbar(L, m, yerr=se, fmt="o", color="C0", capsize=3, label="mean ± SE over seeds")
    x, y = nets["depth"].to_numpy(float), nets["median_d"].to_numpy(float)
    good = np.isfinite(y) & (y > 0)
    if good.sum() >= 2 and np.unique(x[good]).size >= 2:
        from .theory import ols

        lx = np.log(x[good])
        b, a = ols(np.stack([lx, np.ones_like(lx)], 1), np.log(y[good])).beta
        g = np.unique(x[good])
        ax.plot(g, np.exp(a) * g ** b, "k--", lw=1, label=f"fit: slope {b:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _depth_ticks(ax, nets["depth"])
    _plain_log_ticks(ax, "y")
    ax.set(xlabel="depth L", ylabel=r"median$_\ell$ 1 - CKA($a_\ell$, $a_{\ell+1}$)",
           title="consecutive middle layers")
    ax.legend(fontsize=8)


def draw_cross_depth_cka(ax: Axes, cross: pd.DataFrame) -> None:
    """Cross-depth finding: CKA between the representations at relative depth ``p`` of the
    same seed's nets of adjacent depths (x: the shallower depth), one line per ``p``, mean
    +- SE over seeds."""
    ps = sorted(cross["p"].unique()) if len(cross) else []
    for col, p in zip(_colors(len(ps)), ps, strict=True):
        L, m, se = _mean_se_by(cross[cross["p"] == p], "depth", "cka")
        ax.errorbar(L, m, yerr=se, fmt="o-", color=col, capsize=3, label=f"p = {p:g}")
    ax.set(xlabel="depth L (vs the next depth)", ylabel="linear CKA",
           title="same relative depth p = l/L, adjacent depths")
    ax.legend(fontsize=8)


def representation_convergence_figure(nets: pd.DataFrame, cross: pd.DataFrame,
                                      path: Path) -> Path:
    """Claim 10: consecutive middle-layer dissimilarity against depth, and the cross-depth
    CKA at fixed relative depth."""
    fig = new_figure((10, 3.8))
    a, b = fig.subplots(1, 2)
    draw_rep_convergence(a, nets)
    draw_cross_depth_cka(b, cross)
    return save_figure(fig, path)


def narrow_minima_figure(df: pd.DataFrame, path: Path) -> Path:
    fig = new_figure((4.4, 3.8))
    draw_narrow_minima(fig.subplots(), df)
    return save_figure(fig, path)


def draw_rank_per_layer(ax: Axes, layers: pd.DataFrame, column: str, *, label: str,
                        color: Any = "C0", fmt: str = "o-") -> None:
    """A per-layer column over the seeds of one depth (rows: layer, ``column``, one table per
    seed concatenated): the mean per layer with its standard error as error bars, every seed
    as a faint point."""
    ax.plot(layers["layer"], layers[column], ".", color=color, alpha=0.3)
    x, m, se = _mean_se_by(layers, "layer", column)
    ax.errorbar(x, m, yerr=se, fmt=fmt, ms=4, capsize=3, color=color, label=label)


def symmetry_figure(pca: np.ndarray, inv: np.ndarray, layer: int, layers: pd.DataFrame,
                    path: Path) -> Path:
    """Bottleneck-layer PCA of held-out points coloured by each invariant (one seed), and the
    verdict's measure, the energy rank of the centered representation per layer (``layers``:
    every seed's table; mean ± SE over the seeds), with the participation ratio (reported)."""
    fig = new_figure((14, 3.9))
    axes = fig.subplots(1, 3)
    for ax, j, lab in ((axes[0], 0, r"$r = \sqrt{x_1^2 + x_2^2}$"), (axes[1], 1, "$x_3$")):
        draw_pca(ax, pca, color=inv[:, j], color_label=lab,
                 title=f"layer {layer} coloured by {lab}")
    n = int(layers["seed"].nunique()) if "seed" in layers else 1
    draw_rank_per_layer(axes[2], layers, "rep_energy_rank",
                        label=f"energy rank (verdict), mean ± SE over {n} seed(s)")
    draw_rank_per_layer(axes[2], layers, "rep_erank_participation", color="0.5", fmt="s--",
                        label="participation ratio (reported)")
    axes[2].axhline(2, color="k", ls=":", lw=1, label="k = 2")
    axes[2].set(xlabel="layer l", ylabel="rank of the centered representation",
                title="energy rank per layer (verdict: 2 at the bottleneck)")
    axes[2].set_ylim(bottom=0)
    axes[2].legend(fontsize=7)
    return save_figure(fig, path)


def digits_figure(layers: pd.DataFrame, nets: pd.DataFrame, path: Path) -> Path:
    """Energy rank and participation ratio of the centered representation per layer, one
    line per depth (mean over seeds, band: min to max), labelled with the test accuracy; and
    the finding's verdict, the smallest slack of the bottleneck inequality per net (mean ±
    SE over the seeds; it must be >= 0)."""
    fig = new_figure((15.5, 3.8))
    a, b, c = fig.subplots(1, 3)
    acc = nets.groupby("depth")["test_accuracy"].mean()
    labels = {int(L): f"L={L} (test acc {v:.2f})" for L, v in acc.items()}
    draw_rank_over_seeds(a, layers, "rep_energy_rank", labels=labels)
    a.set_title("digits: energy rank (all but 1% of the energy)")
    a.legend(fontsize=7)
    draw_rank_over_seeds(b, layers, "rep_erank_participation", labels=labels)
    b.set_title("digits: participation ratio")
    if "min_slack" in nets:
        draw_over_seeds(c, nets, "min_slack", label="mean ± SE over seeds")
        c.axhline(0, color="k", ls="--", lw=1, label="0 (the inequality)")
        c.set(xlabel="depth L", ylabel="smallest slack over the points",
              title="bottleneck inequality (verdict: >= 0)")
        c.legend(fontsize=7)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- training curves

#: the history columns :func:`history_figure` draws, with their axis labels and scales
HISTORY_PANELS: tuple[tuple[str, str, str], ...] = (
    ("objective", r"objective $\frac{1}{N}\sum\|f-y\|^2 + \lambda\|\theta\|^2$", "log"),
    ("rel_fit", r"relative fit $\sum\|f-y\|^2 / \sum\|y\|^2$", "log"),
    ("param_norm2", r"$\|\theta\|^2$", "linear"),
)


def draw_history(ax: Axes, history: pd.DataFrame, column: str, *, label: str | None = None,
                 color: Any = "C0", stages: bool = True, stage_labels: bool = True,
                 label_row: int = 0) -> None:
    """One history column of a run (``history.csv``: one row per logged step) against the
    step; with ``stages``, a dotted vertical line where each stage after the first begins,
    labelled ``stage n`` (``stage_labels``; ``label_row``: the row of text below the top, so
    the labels of several runs do not overlap)."""
    ax.plot(history["step"], history[column], "-", lw=1.3, color=color, label=label)
    if stages and "stage" in history and len(history):
        st = history["stage"].to_numpy()
        for i in np.flatnonzero(np.diff(st) != 0) + 1:
            x = float(history["step"].iloc[i - 1])
            ax.axvline(x, color=color, ls=":", lw=1)
            if stage_labels:
                ax.annotate(f"stage {int(st[i]) + 1}", (x, 1),
                            xycoords=("data", "axes fraction"), xytext=(3, -3 - 10 * label_row),
                            textcoords="offset points", va="top", fontsize=7, color=color)


def history_figure(histories: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """Training curves of one or more runs (name -> history): the objective, the relative
    fit and :math:`\\|\\theta\\|^2` against the step (one panel each, stacked, stage
    boundaries dotted), one colour per run."""
    fig = new_figure((8, 2.7 * len(HISTORY_PANELS)))
    axes = fig.subplots(len(HISTORY_PANELS), 1, sharex=True)
    cols = _colors(len(histories)) if len(histories) > 1 else ["C0"]
    for j, (ax, (col, ylabel, scale)) in enumerate(zip(axes, HISTORY_PANELS, strict=True)):
        for i, (c, (name, h)) in enumerate(zip(cols, histories.items(), strict=True)):
            if col in h:
                draw_history(ax, h, col, label=name, color=c, stage_labels=j == 0,
                             label_row=i)
        ax.set_yscale(scale)
        ax.set_ylabel(ylabel)
    axes[-1].set_xlabel("step")
    axes[0].legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)


# --------------------------------------------------------------------------- the regime map

def draw_regime_panel(ax: Axes, cells: pd.DataFrame, column: str, *, label: str,
                      cmap: str = "viridis", vmin: float | None = None,
                      vmax: float | None = None, text: str | None = None,
                      boundary: pd.DataFrame | None = None,
                      protocol: float | None = None) -> Any:
    """One panel of the regime map: a cell per (depth, lam) of ``cells``
    (:func:`bnstruct.regime.regime_cells`), coloured by ``column`` (its mean over the seeds),
    annotated with ``text`` (a column of strings, default the value), with the collapse
    boundary (:func:`bnstruct.regime.collapse_boundary`: a red step line between the last
    kept and the first collapsed lam of each depth) and the protocol's lam (dashed).
    Returns the mesh (for a colorbar)."""
    depths = sorted(cells["depth"].unique())
    lds = sorted(cells["lam"].unique())
    Z = np.full((len(lds), len(depths)), np.nan)
    for r in cells.itertuples(index=False):
        Z[lds.index(r.lam), depths.index(r.depth)] = getattr(r, column)
    mesh = ax.pcolormesh(np.arange(len(depths) + 1) - 0.5, np.arange(len(lds) + 1) - 0.5, Z,
                         cmap=cmap, vmin=vmin, vmax=vmax, shading="flat")
    for r in cells.itertuples(index=False):
        v = getattr(r, text) if text else getattr(r, column)
        ax.text(depths.index(r.depth), lds.index(r.lam),
                v if isinstance(v, str) else f"{v:.2g}", ha="center", va="center",
                fontsize=8, color="white",
                bbox={"boxstyle": "round,pad=0.15", "fc": "black", "alpha": 0.35, "lw": 0})
    if boundary is not None and len(boundary):
        ys = []
        for L in depths:
            b = boundary[boundary["depth"] == L]
            at = float(b["collapse_at"].iloc[0]) if len(b) else float("nan")
            ys.append(lds.index(at) - 0.5 if np.isfinite(at) else len(lds) - 0.5)
        xs = np.repeat(np.arange(len(depths) + 1) - 0.5, 2)[1:-1]
        ax.plot(xs, np.repeat(ys, 2), color="red", lw=2.5, label="collapse boundary")
    if protocol is not None and protocol in lds:
        ax.axhline(lds.index(protocol), color="white", ls="--", lw=1.2, label="protocol")
    ax.set_xticks(range(len(depths)), [str(int(d)) for d in depths])
    ax.set_yticks(range(len(lds)), [f"{v:g}" for v in lds])
    ax.set_xlabel("depth L")
    ax.set_ylabel("lam (rank cost of a direction: lam L)")
    ax.set_title(label)
    return mesh


def regime_figure(cells: pd.DataFrame, boundary: pd.DataFrame, k: int, path: Path, *,
                  protocol: float | None = None) -> Path:
    """The regime map in three panels over depth x lam: the learned bottleneck rank (mean
    over the seeds; text: seeds that kept rank k / seeds), the share of layers on the weight
    structure, and ||theta||^2 / (kL); each with the collapse boundary and the protocol."""
    cells = cells.assign(kept=[f"{int(a)}/{int(n)}" for a, n in
                               zip(cells["found_k"], cells["n"], strict=True)])
    fig = new_figure((15, 4.4))
    axes = fig.subplots(1, 3)
    panels = (("learned_rank", f"learned rank (text: seeds with rank {k})", "coolwarm",
               k - 1.5, k + 1.5, "kept"),
              ("on_fraction", "share of layers on the structure", "viridis", 0.0, 1.0, None),
              ("norm2_kL", "||theta||^2 / (kL)", "magma", None, None, None))
    for ax, (col, label, cmap, lo, hi, text) in zip(axes, panels, strict=True):
        mesh = draw_regime_panel(ax, cells, col, label=label, cmap=cmap, vmin=lo, vmax=hi,
                                 text=text, boundary=boundary, protocol=protocol)
        fig.colorbar(mesh, ax=ax, shrink=0.85)
    axes[0].legend(loc="upper left", fontsize=7, framealpha=0.7)
    return save_figure(fig, path)
