"""Figures of one analyzed network (drawing only; the numbers come from :func:`analyze`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from ._analyze import Analysis

__all__ = ["plot_analysis"]


def plot_analysis(a: Analysis, path: str | Path | None = None, *, color: Any = None,
                  color_label: str = "") -> Any:
    """Three panels: singular values of every ``W_l`` against the layer (log scale down to
    ``1e-4 s_max``, smaller values drawn on that floor; the top ``k+1`` highlighted, a line at
    1); representation ranks per layer (effective ranks and numerical rank, log2 scale, a line
    at ``k``); the 2-d PCA of the bottleneck layer, coloured by ``color`` (``[N]`` values, e.g.
    a latent variable or an invariant of the task; uniform when ``None``).

    Uses the Agg canvas directly (``matplotlib.figure.Figure``; no pyplot, no display).
    Returns the Figure; writes it to ``path`` (format from the suffix) when given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    s, df = a.summary, a.layers
    k = int(s["k"])
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    layers = df["layer"].to_numpy()
    smax = max(float(np.max(sv)) for sv in a.weight_spectra if len(sv))
    tiny = 1e-4 * smax if smax > 0 else 1e-300
    for l, sv in zip(layers, a.weight_spectra, strict=True):
        ax1.scatter(np.full(len(sv), l), np.maximum(sv, tiny), s=6, color="0.6", lw=0)
    for i in range(min(k + 1, max(len(sv) for sv in a.weight_spectra))):
        ys = [sv[i] if i < len(sv) else np.nan for sv in a.weight_spectra]
        ax1.plot(layers, np.maximum(ys, tiny), marker="o", ms=3,
                 label=f"$s_{{{i + 1}}}$" + (" ($s_{k+1}$)" if i == k else ""))
    ax1.axhline(1.0, color="k", lw=0.8, ls="--")
    ax1.set_yscale("log")
    ax1.set_ylim(bottom=tiny * 0.7)
    ax1.set(xlabel="layer l", ylabel="singular values of $W_l$",
            title=f"weight spectra (k = {k}, {s['k_source']})")
    if k + 1 <= 8:
        ax1.legend(fontsize=7)
    for col, lab in (("rep_erank_entropy", "entropy"), ("rep_erank_participation",
                                                        "participation"),
                     ("rep_erank_threshold", "threshold"),
                     ("rep_rank_numerical", "numerical rank")):
        ax2.plot(layers, df[col], marker="o", ms=3, label=lab)
    ax2.axhline(k, color="k", lw=0.8, ls="--", label=f"k = {k}")
    if s["bottleneck_layers"]:
        lo, hi = s["bottleneck_layers"]
        ax2.axvspan(lo - 0.5, hi + 0.5, color="C7", alpha=0.15, label="bottleneck")
    ax2.set_yscale("log", base=2)
    ax2.set(xlabel="layer l", ylabel="rank of the centered representation",
            title="representation rank per layer")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if color is None:
        ax3.scatter(a.pca[:, 0], a.pca[:, 1], s=8, color="C0")
    else:
        c = np.asarray(color.detach().cpu() if hasattr(color, "detach") else color, dtype=float)
        if c.shape != (len(a.pca),):
            raise ConfigError(f"color must have one value per point ({len(a.pca)}), got shape "
                              f"{c.shape}")
        sc = ax3.scatter(a.pca[:, 0], a.pca[:, 1], s=8, c=c, cmap="viridis")
        fig.colorbar(sc, ax=ax3, label=color_label)
    ax3.set(xlabel="PC 1", ylabel="PC 2", title=f"PCA of layer {s['pca_layer']}")
    ax3.set_aspect("equal", adjustable="datalim")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
