"""Figures of one analyzed network (drawing only; the numbers come from :func:`analyze`; the
panels are :mod:`bnstruct.plots`' axis-level ``draw_*`` functions)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._analyze import Analysis

__all__ = ["plot_analysis"]


def plot_analysis(a: Analysis, path: str | Path | None = None, *, color: Any = None,
                  color_label: str = "") -> Figure:
    """Three panels: singular values of every ``W_l`` against the layer (log scale down to
    ``1e-4 s_max``, smaller values drawn on that floor; ``s_1..s_k`` and ``s_{k+1}``
    highlighted, the near-1 band shaded, the middle layers marked);
    representation ranks per layer (effective ranks and numerical rank, log2 scale, a line
    at ``k``, the bottleneck range shaded); the 2-d PCA of the bottleneck layer, coloured by
    ``color`` (``[N]`` values, e.g. a latent variable or an invariant of the task; uniform
    when ``None``).

    Uses the ``matplotlib.figure.Figure`` API with an Agg canvas (no pyplot, no display, the
    current backend is left as it is). Returns the Figure; writes it to ``path`` (format from
    the suffix) when given.
    """
    from ..conventions import middle_layers
    from ..plots import draw_pca, draw_rank_profile, draw_weight_spectra, new_figure

    s, df = a.summary, a.layers
    k = int(s["k"])
    fig = new_figure((15, 4.4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    draw_weight_spectra(ax1, a.weight_spectra, k, middle=middle_layers(len(a.weight_spectra)),
                        title=f"weight spectra (k = {k}, {s['k_source']})")
    draw_rank_profile(ax2, df, k=k, bottleneck=s["bottleneck_layers"], log2=True,
                      title="representation rank per layer")
    ax2.legend(fontsize=7)
    draw_pca(ax3, a.pca, color=color, color_label=color_label,
             title=f"PCA of layer {s['pca_layer']}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
