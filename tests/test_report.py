"""``reproduce`` end to end at smoke size: plan-then-execute (one executor call), the
conventions agreement (``bnstruct.analyze`` of a reproduce run gives exactly the per-layer
numbers of its ``claims.json``), strict JSON, errors reported as errors, ``--only`` updates."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import bnstruct
from bnstruct.diagnostics._analyze import LAYER_COLUMNS
from bnstruct.experiments import EXPERIMENTS, bound, get_config
from bnstruct.report import reproduce

#: the claims that share the smoke sweep, plus the two single-net claims with layer tables
NAMES = ["norm-vs-depth", "weight-spectra", "representation-rank", "bound", "symmetry",
         "digits"]


def _strict(text: str):
    def reject(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke reproduce of NAMES, with every executor call recorded."""
    from bnstruct import executors

    out = tmp_path_factory.mktemp("smoke")
    calls = []
    real = executors.execute

    def spy(configs, store, **kw):
        calls.append(list(configs))
        return real(configs, store, **kw)
    with mock.patch("bnstruct.report.execute", spy):
        claims = reproduce("smoke", out, only=NAMES)
    return out, claims, calls


def test_reproduce_plans_everything_then_executes_once(smoke):
    out, claims, calls = smoke
    assert [c.name for c in claims] == NAMES
    assert all(c.error is None for c in claims), [c.error for c in claims]
    assert len(calls) == 1  # every claim's runs in one executor call
    planned = [c.default_name() for n in NAMES
               for c in EXPERIMENTS[n].plan(get_config(n, "smoke"))]
    assert [c.default_name() for c in calls[0]] == planned
    sw = get_config("bound", "smoke")
    dg, sy = get_config("digits", "smoke"), get_config("symmetry", "smoke")
    n_unique = len(sw.depths) * len(sw.seeds) + len(sy.seeds) + len(dg.depths) * len(dg.seeds)
    assert len(set(planned)) == n_unique  # claims 2-5 share the sweep's runs
    data = _strict((out / "claims.json").read_text())
    assert data["meta"]["n_runs"] == n_unique and data["meta"]["train_seconds"] >= 0
    assert claims[3].passed  # the inequality is a theorem: it holds at any size
    assert all((out / "figures").glob("*.png"))


def _equal(a, b) -> bool:
    """Exact or within rtol 1e-12; a JSON null equals a NaN."""
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return (a is None or (isinstance(a, float) and math.isnan(a))) and (
            b is None or (isinstance(b, float) and math.isnan(b)))
    if isinstance(a, bool | str) or isinstance(b, bool | str):
        return bool(a == b)
    return bool(abs(float(a) - float(b)) <= 1e-12 * max(abs(float(a)), abs(float(b))))


def test_analyze_of_a_reproduce_run_gives_the_claims_numbers(smoke):
    """The conventions agreement: for every claim that reports per-layer numbers, load each
    run with ``bnstruct.load_run``, analyze it as the claim did (``analyze(run.model,
    run.task.X, k, ntk=False)``, ``k`` from the row) and compare every shared column."""
    out, _, _ = smoke
    data = _strict((out / "claims.json").read_text())
    checked: dict[str, int] = {}
    for c in data["claims"]:
        rows = c["values"].get("layers")
        if not rows:
            continue
        shared = [col for col in LAYER_COLUMNS if col in rows]
        assert {"layer", "middle"} <= set(shared)
        n = len(rows["layer"])
        cache: dict[tuple[str, int], object] = {}
        for i in range(n):
            key = (rows["run"][i], rows["k"][i])
            if key not in cache:
                r = bnstruct.load_run(out / "runs" / key[0])
                cache[key] = bnstruct.analyze(r.model, r.task.X, key[1], ntk=False).layers
            ref = cache[key].set_index("layer").loc[rows["layer"][i]]
            for col in shared:
                if col == "layer":
                    continue
                got, want = rows[col][i], ref[col]
                want = want.item() if hasattr(want, "item") else want
                assert _equal(got, want), (c["name"], key, rows["layer"][i], col, got, want)
        checked[c["name"]] = len(shared) * n
    assert set(checked) == {"weight-spectra", "representation-rank", "symmetry", "digits"}
    assert len([c for c in LAYER_COLUMNS if c in data["claims"][5]["values"]["layers"]]) == len(
        LAYER_COLUMNS)  # digits keeps the whole table


def test_claims_json_is_strict(smoke):
    out, _, _ = smoke
    data = _strict((out / "claims.json").read_text())
    assert "null" in data["meta"]
    for c in data["claims"]:
        assert isinstance(c["nonfinite"], dict)


def test_a_crashing_experiment_is_an_error_not_a_failed_claim(smoke, tmp_path, monkeypatch):
    out, claims, _ = smoke
    before = _strict((out / "claims.json").read_text())

    def boom(*a, **k):
        raise RuntimeError("measurement exploded")
    monkeypatch.setattr(bound, "measure", boom)
    again = reproduce("smoke", out, only=["bound", "norm-vs-depth"])
    b = {c.name: c for c in again}
    assert b["bound"].error == "RuntimeError: measurement exploded"
    assert b["bound"].outcome == "error" and not b["bound"].passed
    assert b["bound"].statement == bound.statement(get_config("bound", "smoke"))
    assert b["norm-vs-depth"].error is None  # the others still run
    data = _strict((out / "claims.json").read_text())
    assert data["meta"]["errors"] == ["bound"]
    assert "| [bound](#claim-bound) | ERROR |" in (out / "claims.md").read_text()
    # restore the report for the other tests of this module
    (out / "claims.json").write_text(json.dumps(before))


def test_only_updates_the_report_in_place_and_reuses_runs(smoke):
    out, claims, _ = smoke
    t0 = time.perf_counter()
    again = reproduce("smoke", out, only=["norm-vs-depth"])
    assert time.perf_counter() - t0 < 60  # no training: the runs are reused
    assert again[0].values["R0"] == pytest.approx(claims[0].values["R0"], rel=1e-12)
    data = _strict((out / "claims.json").read_text())
    assert [c["name"] for c in data["claims"]] == NAMES
    assert data["meta"]["carried_over"] == [n for n in NAMES if n != "norm-vs-depth"]
    bound_row = data["claims"][NAMES.index("bound")]
    assert bound_row["figures"] == [str(Path(f).relative_to(out)) for f in claims[3].figures]
    assert "kept from the earlier report: weight-spectra" in (out / "claims.md").read_text()
    data["meta"]["mode"] = "quick"  # a report of another mode is replaced, not merged
    (out / "claims.json").write_text(json.dumps(data))
    reproduce("smoke", out, only=["bound"])
    data = _strict((out / "claims.json").read_text())
    assert [c["name"] for c in data["claims"]] == ["bound"] and data["meta"]["mode"] == "smoke"


def test_memo_shares_sweep_measurements(smoke):
    """Claims 2-5 read the same nets: one memo measures each net once."""
    from bnstruct.experiments import Memo, weight_spectra
    from bnstruct.experiments._sweep import sweep_plan

    out, _, _ = smoke
    sw = get_config("weight-spectra", "smoke")
    runs = [bnstruct.load_run(out / "runs" / c.default_name()) for c in sweep_plan(sw)]
    memo = Memo()
    a = weight_spectra.measure(sw, runs, memo=memo)
    assert len(memo) == len(runs)
    b = bound.measure(sw, runs, memo=memo)
    assert len(memo) == len(runs) and a.layers is not b.layers
    np.testing.assert_array_equal(a.nets["param_norm2"], b.nets["param_norm2"])


def test_measure_never_trains(smoke):
    """``measure`` works on the planned runs alone: training is forbidden while it runs."""
    out, _, _ = smoke

    def no_training(*a, **k):
        raise AssertionError("measure must not train")
    with mock.patch("bnstruct.training._loop._Loop.run", no_training):  # every path's loop
        for name in NAMES:
            mod, cfg = EXPERIMENTS[name], get_config(name, "smoke")
            runs = [bnstruct.load_run(out / "runs" / c.default_name()) for c in mod.plan(cfg)]
            claim = mod.verdict(mod.measure(cfg, runs), cfg)
            assert claim.name == name and claim.error is None


def test_a_corrupt_stored_run_is_named_in_its_claims_row(smoke, tmp_path):
    """A truncated weights file in the store: the claims that read that run are errors whose
    text names the file (not a bare SafetensorError); the others still run."""
    import shutil

    out, _, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    name = EXPERIMENTS["bound"].plan(get_config("bound", "smoke"))[0].default_name()
    w = copy / "runs" / name / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    claims = reproduce("smoke", copy, only=["bound", "symmetry"])
    by = {c.name: c for c in claims}
    assert by["bound"].error is not None and str(w) in by["bound"].error
    assert by["symmetry"].error is None
