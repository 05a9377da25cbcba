"""Plotting leaves the user's Matplotlib backend alone (no ``matplotlib.use``, no pyplot) and
draws every panel on the axes it is given."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd


def test_backend_unchanged_after_claim_figure_and_analysis(tmp_path):
    """In a fresh interpreter whose backend is ``svg`` (as a notebook's would be its own):
    a claim figure and an analysis figure are written, the backend is still ``svg`` and pyplot
    was never imported."""
    code = textwrap.dedent(f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        import numpy as np, pandas as pd, torch
        from bnstruct import MLP, analyze, plots
        torch.manual_seed(0)
        model = MLP(3, 8, 4, 2).double()
        X = torch.randn(30, 3, dtype=torch.float64)
        a = analyze(model, X, 2, ntk=False)
        fig = a.plot(r"{tmp_path / 'analysis.png'}", color=X[:, 0], color_label="x1")
        df = pd.DataFrame({{"solution": ["rank 2", "rank 1"], "seed": 0, "depth": 4,
                           "ntk_per_NL": [1.0, 3.0]}})
        plots.narrow_minima_figure(df, r"{tmp_path / 'claim.png'}")
        lay = a.layers.assign(depth=4, seed=0, rep_energy_rank=2)
        plots.rep_rank_figure(lay, 2, r"{tmp_path / 'rank.png'}")
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, type(fig).__name__)
    """)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["svg", "False", "Figure"]
    for f in ("analysis.png", "claim.png", "rank.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_panels_draw_on_the_given_axes():
    from bnstruct.conventions import NEAR_ONE
    from bnstruct.plots import draw_pca, draw_rank_profile, draw_weight_spectra, new_figure

    fig = new_figure((9, 3))
    a, b, c = fig.subplots(1, 3)
    spectra = [np.array([3.0, 1.0, 0.01]), np.array([1.2, 0.9, 0.001, 0.0])]
    draw_weight_spectra(a, spectra, 2, middle=[2])
    assert a.get_yscale() == "log" and len(a.lines) >= 3  # s_1..s_k, s_{k+1}, the line at 1
    band = [p for p in a.patches if p.get_label().startswith("near 1")]
    assert len(band) == 1 and f"[{NEAR_ONE[0]:g}, {NEAR_ONE[1]:g}]" in band[0].get_label()
    lay = pd.DataFrame({"layer": [1, 2, 3], "rep_erank_participation": [4.0, 2.0, 3.0]})
    draw_rank_profile(b, lay, columns=["rep_erank_participation"], k=2, relative=True)
    np.testing.assert_allclose(b.lines[0].get_xdata(), [1 / 3, 2 / 3, 1.0])
    sc = draw_pca(c, np.arange(8.0).reshape(4, 2), color=[0, 1, 2, 3], color_label="t")
    assert sc.axes is c and len(fig.axes) == 4  # the colorbar's axes
