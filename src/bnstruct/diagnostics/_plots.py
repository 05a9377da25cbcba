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

    if a.summary.get("implementation") == "leaky-resnet":
        return _plot_leaky(a, path, color, color_label)
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


def _plot_leaky(a: Analysis, path: str | Path | None, color: Any, color_label: str) -> Figure:
    """A leaky ResNet's :func:`plot_analysis`: the weight spectra (relu parts) per layer,
    the kinetic and potential energy and H along p, the COI profile, the PCA of the layer of
    least COI."""
    from ..plots import draw_pca, draw_weight_spectra, new_figure

    s: dict[str, Any] = dict(a.summary)
    df = a.layers
    k = int(s["k"])
    fig = new_figure((15, 8.4))
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    draw_weight_spectra(ax1, a.weight_spectra, k, title=f"W_l spectra (relu part, k = {k})")
    ax2.plot(df["p_in"], df["kinetic"], marker=".", label="kinetic")
    ax2.plot(df["p_in"], df["potential"], marker=".", ls="--", label="potential")
    ax2.set_yscale("log")
    ax2.set_xlabel("p (depth, the step's input)")
    ax2.set_ylabel("energy")
    tw = ax2.twinx()
    tw.plot(df["p_in"], df["hamiltonian"], color="C2", marker=".", label="H (right axis)")
    tw.set_ylabel("H = kinetic - potential")
    ax2.legend(handles=[*ax2.get_lines(), *tw.get_lines()], fontsize=8)
    ax2.set_title(f"energies along depth (Lt = {s['leak']:g})")
    ax3.plot(df["p"], df["coi"], marker=".", label="COI")
    ax3.plot(df["p"], df["coi_lower"], marker=".", ls=":", label="nuclear^2 / Frobenius^2")
    ax3.axhline(k, color="k", ls=":", lw=1, label=f"k = {k}")
    ax3.set_yscale("log")
    ax3.set_xlabel("p (depth)")
    ax3.set_ylabel("Cost of Identity")
    ax3.set_title(f"COI (gamma0 = {s['coi_gamma0']:g}); min {s['coi_min']:.3g}")
    ax3.legend(fontsize=8)
    draw_pca(ax4, a.pca, color=color, color_label=color_label,
             title=f"PCA of layer {s['pca_layer']} (least COI)")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
