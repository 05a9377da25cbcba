"""Every registered experiment implements the protocol: ``NAME``, ``KIND``, ``CONFIGS`` per
mode, ``statement(cfg)``, ``plan(cfg) -> list[RunConfig]`` (pure: nothing trains, nothing is
written), ``measure(cfg, runs, *, memo=None)``, ``verdict(measured, cfg) -> Claim``,
``figures(measured, figdir)``; and no module keeps a process-global cache."""

from __future__ import annotations

import inspect
from unittest import mock

import pytest

from bnstruct.config import RunConfig
from bnstruct.experiments import EXPERIMENTS, MODES, get_config

PARAMS = {
    "statement": ["cfg"],
    "plan": ["cfg"],
    "measure": ["cfg", "runs", "memo"],
    "verdict": ["measured", "cfg"],
    "figures": ["measured", "figdir"],
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_implements_the_protocol(name, tmp_path, monkeypatch):
    mod = EXPERIMENTS[name]
    assert mod.NAME == name and mod.KIND in ("claim", "finding")
    assert set(mod.CONFIGS) == set(MODES)
    for fn, want in PARAMS.items():
        sig = inspect.signature(getattr(mod, fn))
        got = list(sig.parameters)
        assert len(got) == len(want), (name, fn, got)
        if fn == "measure":
            assert sig.parameters[got[2]].kind is inspect.Parameter.KEYWORD_ONLY
            assert sig.parameters[got[2]].default is None
    assert not hasattr(mod, "STATEMENT") and not hasattr(mod, "figure")  # the v1 names are gone

    def no_training(*a, **k):
        raise AssertionError("plan must not train")
    monkeypatch.chdir(tmp_path)
    with mock.patch("bnstruct.training._loop._Loop.run", no_training):  # every path's loop
        for mode in MODES:
            cfg = get_config(name, mode)
            plan = mod.plan(cfg)
            assert plan and all(isinstance(c, RunConfig) for c in plan)
            assert [c.digest() for c in mod.plan(cfg)] == [c.digest() for c in plan]  # pure
            st = mod.statement(cfg)
            assert isinstance(st, str) and len(st) > 20
    assert list(tmp_path.iterdir()) == []  # planning wrote nothing


def test_no_process_global_cache():
    from bnstruct.experiments import _records, _statistics, _sweep

    assert not hasattr(_sweep, "_SWEEP_CACHE")
    for mod in [_records, _sweep, _statistics, *EXPERIMENTS.values()]:
        for attr, v in vars(mod).items():
            if isinstance(v, dict) and attr.lower().endswith("cache"):
                pytest.fail(f"{mod.__name__}.{attr} is a module-level cache")


def test_sweep_claims_share_identical_run_configs():
    for mode in MODES:
        plans = [[c.default_name() for c in EXPERIMENTS[n].plan(get_config(n, mode))]
                 for n in ("norm-vs-depth", "weight-spectra", "representation-rank", "bound")]
        assert all(p == plans[0] for p in plans)
        sw = get_config("bound", mode)
        assert len(plans[0]) == len(sw.depths) * len(sw.seeds)
        narrow = EXPERIMENTS["narrow-minima"].plan(get_config("narrow-minima", mode))
        assert narrow[0].default_name() in plans[0]  # the rank-k net is the sweep's


def test_quick_sweep_digests_are_pinned():
    """The quick sweep's seed-0 run configs are pinned: a protocol change invalidates every
    stored run and must be deliberate (L = 8 keeps the digest of the earliest sweep: the same
    config)."""
    sw = get_config("bound", "quick")
    seed0 = {c.model.depth: c.digest() for c in EXPERIMENTS["bound"].plan(sw) if c.seed == 0}
    assert seed0 == PINNED_QUICK_SEED0


#: digests of the quick sweep's seed-0 runs (from their run directory names)
PINNED_QUICK_SEED0: dict[int, str] = {8: "93b903f32e", 12: "48edb3d09b", 16: "9ce6345edc",
                                       20: "e1f668e579"}
