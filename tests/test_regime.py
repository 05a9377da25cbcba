"""The regime map (bnstruct.regime, finding `regime-map`, `bnstruct regime`): its grid shares
the protocol's runs, its per-net numbers agree with independent computations on the trained
weights, its cell and boundary tables follow from the per-net table, and its verdict fails
when the protocol's column collapses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import bnstruct as bn
from bnstruct.errors import ConfigError
from bnstruct.experiments import EXPERIMENTS, MODES, get_config
from bnstruct.experiments import regime_map as rm
from bnstruct.experiments._sweep import SweepConfig, sweep_plan
from bnstruct.regime import (
    NO_FIT,
    RegimeGrid,
    RegimeMap,
    classify,
    collapse_boundary,
    regime_cells,
    regime_map,
)

TINY = SweepConfig(task_kwargs=(("k", 2), ("n_train", 24)), depths=(2, 3), width=6,
                   lam=0.05, steps=30, seeds=(0, 1))


def test_classify_every_branch():
    assert classify(0.6, 2, 1.0, 2) == "no fit"
    assert classify(float("nan"), 2, 1.0, 2) == "no fit"
    assert classify(NO_FIT, 2, 1.0, 2) == "no fit"  # rel_fit >= 0.5 fits nothing
    assert classify(0.1, 1, 1.0, 2) == "lower rank"
    assert classify(0.1, 3, 1.0, 2) == "higher rank"
    assert classify(0.1, 2, 0.75, 2) == "structured"
    assert classify(0.1, 2, 0.74, 2) == "unstructured"


def test_grid_validates_and_shares_the_protocol_runs():
    with pytest.raises(ConfigError, match="lams"):
        RegimeGrid(TINY, ())
    with pytest.raises(ConfigError, match="lams"):
        RegimeGrid(TINY, (0.1, -0.2))
    with pytest.raises(ConfigError, match="lams"):
        RegimeGrid(TINY, (0.1, 0.1))
    with pytest.raises(ConfigError, match="depths"):
        RegimeGrid(TINY, (0.1,), depths=(3, 3))
    g = RegimeGrid(TINY, (0.2, 0.05))
    names = [c.default_name() for c in g.plan()]
    assert len(names) == len(set(names)) == 2 * len(TINY.depths) * len(TINY.seeds)
    # the protocol's column (lam = 0.05) is the sweep itself: the same run configs
    assert [c.digest() for c in sweep_plan(TINY)] == [c.digest() for c in g.plan()[:4]]
    for c in g.plan()[4:]:  # the column's fixed lam in every stage with a penalty
        assert {s.lam for s in c.stages if s.lam > 0} == {0.2}


@pytest.mark.parametrize("mode", MODES)
def test_reproduce_grid_contains_the_sweep(mode):
    g = get_config("regime-map", mode)
    sweep = {c.digest() for c in sweep_plan(get_config("norm-vs-depth", mode))}
    plan = {c.digest() for c in g.plan()}
    depths = set(g.depths or g.sweep.depths)
    shared = {c.digest() for c in sweep_plan(get_config("norm-vs-depth", mode))
              if c.model.depth in depths}
    assert shared <= plan and shared <= sweep and len(shared) >= 2
    assert rm.protocol(g) == get_config("norm-vs-depth", mode).lam


def _table() -> pd.DataFrame:
    """A synthetic per-net table: depth 10 keeps rank 2 at lam <= 0.02 and loses it at 0.08
    in one seed; depth 20 already loses it at 0.02 (one seed fits nothing)."""
    rows = []
    spec = {(10, 0.005): [(0.01, 2, 0.5), (0.02, 2, 0.6)],
            (10, 0.02): [(0.05, 2, 0.9), (0.06, 2, 0.8)],
            (10, 0.08): [(0.20, 2, 0.9), (0.40, 1, 0.1)],
            (20, 0.005): [(0.01, 3, 0.2), (0.01, 2, 0.8)],
            (20, 0.02): [(0.05, 2, 0.9), (0.90, 0, 0.0)],
            (20, 0.08): [(0.95, 0, 0.0), (0.97, 0, 0.0)]}
    for (L, lam), nets in spec.items():
        for seed, (fit, rank, on) in enumerate(nets):
            rows.append({"depth": L, "lam": lam, "lam_depth": lam * L, "seed": seed,
                         "run": f"r{L}-{lam}-{seed}", "rel_fit": fit, "learned_rank": rank,
                         "jacobian_rank": rank, "rep_rank": float(rank), "on_fraction": on,
                         "norm2_kL": 1.0 + fit, "param_norm2": (1.0 + fit) * 2 * L,
                         "regime": classify(fit, rank, on, 2)})
    return pd.DataFrame(rows)


def test_cells_and_boundary_follow_from_the_table():
    t = _table()
    cells = regime_cells(t).set_index(["depth", "lam"])
    assert len(cells) == 6 and (cells["n"] == 2).all()
    assert cells.loc[(20, 0.02), "lam_depth"] == pytest.approx(0.4)
    c = cells.loc[(10, 0.02)]
    assert (c["n_structured"], c["found_k"], c["regime"]) == (2, 2, "structured")
    np.testing.assert_allclose(c["on_fraction"], 0.85, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c["on_fraction_se"], np.std([0.9, 0.8], ddof=1) / np.sqrt(2),
                               rtol=1e-12)
    c = cells.loc[(10, 0.005)]  # both fit with rank 2, neither on the structure
    assert (c["n_unstructured"], c["found_k"], c["regime"]) == (2, 2, "unstructured")
    c = cells.loc[(10, 0.08)]  # a tie resolves to the worse regime
    assert (c["n_lower_rank"], c["n_structured"], c["regime"]) == (1, 1, "lower rank")
    assert cells.loc[(20, 0.005), "n_higher_rank"] == 1
    assert cells.loc[(20, 0.08), "regime"] == "no fit"
    b = collapse_boundary(t).set_index("depth")
    assert b.loc[10, "collapse_at"] == 0.08 and b.loc[10, "kept_below"] == 0.02
    assert b.loc[10, "collapse_lam_depth"] == pytest.approx(0.8)
    assert b.loc[20, "collapse_at"] == 0.02 and b.loc[20, "kept_below"] == 0.005
    t2 = t[t["depth"] == 10]
    t2 = t2[t2["lam"] < 0.08]
    b2 = collapse_boundary(t2)
    assert np.isnan(b2["collapse_at"].iloc[0]) and b2["kept_below"].iloc[0] == 0.02


def _synthetic_map(table: pd.DataFrame, protocol: float) -> tuple[RegimeMap, RegimeGrid]:
    g = RegimeGrid(dataclasses.replace(TINY, lam=protocol, depths=(10, 20)),
                   (0.005, 0.02, 0.08))
    return RegimeMap(g, table, regime_cells(table), collapse_boundary(table)), g


def test_verdict_fails_when_the_protocol_column_collapses():
    m, g = _synthetic_map(_table(), 0.02)  # depth 20 seed 1 fits nothing at lam = 0.02
    c = rm.verdict(m, g)
    assert not c.passed and c.outcome == "FAIL" and c.kind == "finding"
    assert "L=20 seed 1 (no fit" in c.why and "3/4 nets" in c.key
    m, g = _synthetic_map(_table(), 0.005)  # every net keeps rank >= 2 at lam = 0.005
    c = rm.verdict(m, g)
    assert c.passed and c.outcome == "reported" and c.why == ""
    assert c.values["protocol"] == 0.005 and len(c.values["nets"]["run"]) == 12
    t = _table()
    t.loc[(t["lam"] == 0.005) & (t["depth"] == 10) & (t["seed"] == 0),
          ["learned_rank", "regime"]] = [1, "lower rank"]
    m, g = _synthetic_map(t, 0.005)
    assert not rm.verdict(m, g).passed


def test_trained_grid_matches_independent_measurements(tmp_path):
    """A tiny grid end to end: every number of the per-net table recomputed from the stored
    weights without the regime code (float64)."""
    from bnstruct.conventions import bottleneck_rank

    g = RegimeGrid(TINY, (0.05, 0.25))
    m = regime_map(g, tmp_path / "runs")
    assert len(m.nets) == 8 and len(m.cells) == 4
    runs = bn.runs(tmp_path / "runs")
    assert len(runs) == 8
    for r in m.nets.itertuples(index=False):
        run = bn.load_run(tmp_path / "runs" / r.run)
        assert run.config.model.depth == r.depth and run.config.seed == r.seed
        assert sorted({s.lam for s in run.config.stages if s.lam > 0}) == [r.lam]
        assert r.lam_depth == pytest.approx(r.lam * r.depth, rel=1e-15)
        model = run.model.double()
        X, Y = run.task.X.double(), run.task.Y.double()
        with torch.no_grad():
            n2 = sum(float((p ** 2).sum()) for p in model.parameters())
            fit = float(((model(X) - Y) ** 2).sum() / (Y ** 2).sum())
            spectra = [torch.linalg.svdvals(W).numpy() for W in
                       (mod.weight for mod in model.modules()
                        if isinstance(mod, torch.nn.Linear))]
        np.testing.assert_allclose(r.norm2_kL, n2 / (2 * r.depth), rtol=1e-5)
        np.testing.assert_allclose(r.rel_fit, fit, rtol=1e-4)
        assert r.learned_rank == bottleneck_rank(
            spectra, jacobian_rank=r.jacobian_rank)[0]
        assert r.regime == classify(r.rel_fit, r.learned_rank, r.on_fraction, 2)
    # reused from the store: the same table
    again = regime_map(g, tmp_path / "runs")
    pd.testing.assert_frame_equal(again.nets, m.nets)


def test_cli_regime(tmp_path, capsys):
    from bnstruct.cli import main

    assert main(["regime", "--lam", "0.1,x", "--out", str(tmp_path / "r")]) == 2
    assert "--lam" in capsys.readouterr().err
    assert main(["regime", "--lam", "0.1,-1", "--out", str(tmp_path / "r")]) == 2
    assert "--lam must be" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    rc = main(["regime", "--mode", "smoke", "--depth", "2,3", "--width", "6", "--steps", "30",
               "--seed", "0", "--n-train", "24", "--lam", "0.05,0.25", "--out",
               str(tmp_path / "r"), "--csv", str(tmp_path / "t.csv"), "--figure",
               str(tmp_path / "m.png"), "--protocol", "0.05"])
    assert rc == 0
    t = pd.read_csv(tmp_path / "t.csv")
    assert len(t) == 4 and set(t["lam"]) == {0.05, 0.25}
    assert (tmp_path / "m.png").stat().st_size > 10_000
    assert "collapse boundary" in capsys.readouterr().out


def test_registered_as_a_finding():
    assert EXPERIMENTS["regime-map"].KIND == "finding"
    assert rm.CAPTIONS["regime_map"]
