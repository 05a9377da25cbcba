"""bnstruct.theory: closed forms against brute force, expansion rates, sub-additivity, depth
fits with honest error bars, bad input, and deep linear training against the theory (float64).
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.optimize
import torch

import bnstruct as bn
from bnstruct import theory
from bnstruct.cli import main
from bnstruct.depthfit import fit_depth_runs
from bnstruct.errors import ConfigError, DataError
from bnstruct.testing import assert_close

torch.set_num_threads(1)


def _low_rank(rng: np.random.Generator, m: int, n: int, r: int) -> np.ndarray:
    return rng.standard_normal((m, r)) @ rng.standard_normal((r, n))


def _product(Ws: list) -> np.ndarray:
    P = Ws[0]
    for W in Ws[1:]:
        P = W @ P
    return P


# --------------------------------------------------------------------------- brute force


def brute_force_cost(A: np.ndarray, L: int, width: int, *, seed: int = 0,
                     restarts: int = 2) -> float:
    """min sum_l ||W_l||^2 subject to W_L ... W_1 = A, by L-BFGS on the free factors.

    The constraint is eliminated without using the closed form: W.l.o.g. W_1's rows lie in the
    row space of A (projecting them onto it keeps the product and lowers ||W_1||), so
    W_1 = M Q^T with Q an orthonormal basis of row(A). Given M, W_2..W_{L-1}, the
    smallest W_L with W_L X Q^T = A (X = W_{L-1}...W_2 M, full column rank) is A Q X^+.
    """
    Q = scipy.linalg.orth(A.T)  # [d_in, r]
    r = Q.shape[1]
    B = torch.as_tensor(A @ Q)
    shapes = [(width, r)] + [(width, width)] * (L - 2)
    sizes = [a * b for a, b in shapes]

    def f(x_np: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(x_np, requires_grad=True)
        Ws, i = [], 0
        for (a, b), n in zip(shapes, sizes, strict=True):
            Ws.append(x[i:i + n].reshape(a, b))
            i += n
        X = _product(Ws)
        W_last = B @ torch.linalg.solve(X.T @ X, X.T)
        val = sum((W ** 2).sum() for W in Ws) + (W_last ** 2).sum()
        val.backward()
        return val.item(), x.grad.numpy()

    rng = np.random.default_rng(seed)
    best = math.inf
    for _ in range(restarts):
        x0 = rng.standard_normal(sum(sizes)) / math.sqrt(width)
        res = scipy.optimize.minimize(f, x0, jac=True, method="L-BFGS-B",
                                      options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-15})
        best = min(best, float(res.fun))
    return best


@pytest.mark.parametrize("m,n,r,L,width", [
    (3, 3, 3, 2, 3),   # square, invertible
    (4, 3, 3, 3, 3),   # tall, full column rank
    (3, 5, 2, 4, 3),   # wide, rank deficient, hidden wider than the rank
    (5, 4, 2, 3, 2),   # tall, rank deficient
    (2, 2, 2, 6, 2),   # deep
])
def test_linear_cost_matches_brute_force(m: int, n: int, r: int, L: int, width: int) -> None:
    rng = np.random.default_rng(100 * m + 10 * n + L)
    A = _low_rank(rng, m, n, r)
    assert theory.numerical_rank(A) == r
    assert_close(theory.linear_cost(A, L), brute_force_cost(A, L, width), rtol=1e-6, atol=0,
                 what=f"linear_cost vs brute force ({m}x{n}, rank {r}, L={L})")


def test_random_factorizations_never_beat_linear_cost() -> None:
    """linear_cost is a lower bound for every factorization (and is attained)."""
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(200):
        L = int(rng.integers(1, 6))
        dims = rng.integers(1, 5, size=L + 1)
        Ws = [rng.standard_normal((dims[i + 1], dims[i])) for i in range(L)]
        cost = theory.linear_cost(_product(Ws), L)
        ratios.append(sum(float((W ** 2).sum()) for W in Ws) / max(cost, 1e-300))
    assert min(ratios) >= 1 - 1e-12, f"a factorization beat linear_cost: ratio {min(ratios)}"


# --------------------------------------------------------------------------- closed forms


def test_linear_cost_and_expansion_values() -> None:
    A = np.diag([2.0, 1.0, 0.5, 0.0])
    assert_close(theory.linear_cost(A, 4), 4 * (2 ** 0.5 + 1 + 0.5 ** 0.5), rtol=1e-14, atol=0,
                 what="linear_cost of diag(2, 1, .5, 0) at L=4")
    assert_close(theory.linear_cost(A, 1), 5.25, rtol=1e-14, atol=0, what="L=1: ||A||_F^2")
    e = theory.linear_expansion(A)
    assert e.R0 == 3
    assert_close([e.R1, e.R2], [0.0, 4 * math.log(2) ** 2], rtol=1e-14, atol=1e-14,
                 what="R1, R2 of diag(2, 1, .5)")
    assert_close(e.singular_values, [2.0, 1.0, 0.5], rtol=1e-14, atol=0, what="kept s")
    rng = np.random.default_rng(2)
    B = rng.standard_normal((4, 6))
    s = np.linalg.svd(B, compute_uv=False)
    assert_close(theory.linear_expansion(B).R1, 2 * np.log(s).sum(), rtol=1e-12, atol=1e-12,
                 what="R1 = 2 log|A|_+")
    assert_close(theory.linear_cost(B, 7), 7 * (s ** (2 / 7)).sum(), rtol=1e-13, atol=0,
                 what="L sum s^(2/L)")


def test_expansion_error_is_order_L_minus_2() -> None:
    """|linear_cost - (L R0 + R1 + R2/L)| ~ C L^-2 with C = (4/3) |sum log^3 s|."""
    rng = np.random.default_rng(3)
    U = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    V = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    s = np.array([3.0, 1.5, 0.2, 0.0])
    A = U[:, :4] @ np.diag(s) @ V.T
    e = theory.linear_expansion(A)
    assert e.R0 == 3
    Ls = np.unique(np.geomspace(8, 2000, 12).astype(int))
    err = np.array([abs(theory.linear_cost(A, int(L)) - e.cost(int(L))) for L in Ls])
    slope = np.polyfit(np.log(Ls), np.log(err), 1)[0]
    assert_close(slope, -2.0, rtol=0, atol=0.05, what="log-log slope of the expansion error")
    C = 4 / 3 * abs(np.sum(np.log(s[:3]) ** 3))
    assert_close(err[-1] * Ls[-1] ** 2, C, rtol=5e-3, atol=0, what="L^2 * error at L=2000")
    # the expansion without R2 is only O(1/L): the R2 term is needed
    err1 = np.array([abs(theory.linear_cost(A, int(L)) - L * e.R0 - e.R1) for L in Ls])
    slope1 = np.polyfit(np.log(Ls), np.log(err1), 1)[0]
    assert_close(slope1, -1.0, rtol=0, atol=0.05, what="slope of the error without R2/L")


@pytest.mark.parametrize("L", [1, 2, 5])
def test_optimal_linear_factors(L: int) -> None:
    rng = np.random.default_rng(4 + L)
    A = _low_rank(rng, 6, 5, 3)
    s = np.linalg.svd(A, compute_uv=False)[:3]
    for width in (None, 7):
        Ws = theory.optimal_linear_factors(A, L, width=width)
        assert len(Ws) == L
        assert Ws[0].shape[1] == 5 and Ws[-1].shape[0] == 6
        assert_close(_product(Ws), A, rtol=0, atol=1e-12, what="product of the factors")
        assert_close(sum(float((W ** 2).sum()) for W in Ws), theory.linear_cost(A, L),
                     rtol=1e-12, atol=0, what="sum of squared norms vs linear_cost")
        for l, W in enumerate(Ws):
            sw = np.linalg.svd(W, compute_uv=False)
            assert_close(sw[:3], s ** (1 / L), rtol=1e-12, atol=0,
                         what=f"layer {l + 1} singular values vs s^(1/L)")
            assert_close(sw[3:], np.zeros(sw.size - 3), rtol=0, atol=1e-12,
                         what=f"layer {l + 1} singular values beyond the rank")


def test_optimal_factors_load_into_deep_linear() -> None:
    rng = np.random.default_rng(5)
    A = torch.as_tensor(_low_rank(rng, 4, 6, 2))
    net = bn.DeepLinear(6, 5, 3, 4, seed=0, dtype=torch.float64)
    Ws = theory.optimal_linear_factors(A, 3, width=5)
    assert all(isinstance(W, torch.Tensor) and W.dtype == torch.float64 for W in Ws)
    with torch.no_grad():
        for lin, W in zip(net.layers, Ws, strict=True):
            lin.weight.copy_(W)
    assert_close(net.end_to_end(), A, rtol=0, atol=1e-12, what="end_to_end of loaded factors")
    assert_close(float(bn.param_norm2(net).detach()), theory.linear_cost(A, 3), rtol=1e-12, atol=0,
                 what="param_norm2 of loaded factors")


def test_pdet_and_rank_threshold() -> None:
    rng = np.random.default_rng(6)
    S = rng.standard_normal((4, 4))
    assert_close(theory.pdet(S), abs(np.linalg.det(S)), rtol=1e-12, atol=0, what="pdet = |det|")
    A = _low_rank(rng, 6, 5, 2)  # round-off singular values ~1e-16 beyond rank 2
    s = np.linalg.svd(A, compute_uv=False)
    assert s[2] > 0 and theory.numerical_rank(A) == 2
    assert_close(theory.log_pdet(A), np.log(s[:2]).sum(), rtol=1e-12, atol=0,
                 what="log |A|_+ ignores round-off singular values")
    assert_close(theory.linear_cost(A, 10), 10 * (s[:2] ** 0.2).sum(), rtol=1e-13, atol=0,
                 what="linear_cost ignores round-off singular values")
    assert_close(theory.log_pdet(A, 1), math.log(s[0]), rtol=1e-13, atol=0, what="log |A|_1")
    assert theory.log_pdet(np.diag([1.0, 0.0]), 2) == -math.inf
    assert theory.pdet(np.zeros((2, 3))) == 1.0  # empty product
    D = np.diag([1.0, 1e-3])
    assert theory.numerical_rank(D) == 2 and theory.numerical_rank(D, rtol=1e-2) == 1
    assert theory.linear_expansion(D, rtol=1e-2).R0 == 1
    # float32 inputs get float32's eps in the default threshold
    D32 = torch.tensor([[1.0, 0.0], [0.0, 1e-7]], dtype=torch.float32)
    assert theory.numerical_rank(D32) == 1 and theory.numerical_rank(D32.double()) == 2


# --------------------------------------------------------------------------- sub-additivity


def test_r1_composition_subadditive_on_random_pairs() -> None:
    rng = np.random.default_rng(7)
    gaps = []
    for _ in range(300):
        m, n, p = rng.integers(2, 7, size=3)
        k = int(rng.integers(1, min(m, n, p) + 1))
        scale = np.exp(rng.uniform(-2, 2))
        A, B = scale * _low_rank(rng, m, n, k), _low_rank(rng, n, p, k) / scale
        g = theory.r1_composition_gap(A, B)
        assert g.condition_met, f"rank condition should hold generically: {g.ranks}"
        assert g.ranks == {"A": k, "B": k, "combined": k}
        gaps.append(g.gap)
        assert_close(g.gap, g.rhs - g.lhs, rtol=0, atol=1e-12, what="gap = rhs - lhs")
    assert min(gaps) >= -1e-9, f"R1(AB) > R1(A) + R1(B) by {-min(gaps):.3g}"
    assert np.median(gaps) > 1e-3  # the inequality is not trivially tight


def test_r1_composition_gap_is_the_principal_angle_term() -> None:
    """gap = -2 log|det(V_A^T U_B)| (the proof in r1_composition_gap's docstring)."""
    rng = np.random.default_rng(8)
    A, B = _low_rank(rng, 5, 4, 2), _low_rank(rng, 4, 3, 2)
    Va = np.linalg.svd(A)[2][:2].T
    Ub = np.linalg.svd(B)[0][:, :2]
    assert_close(theory.r1_composition_gap(A, B).gap,
                 -2 * math.log(abs(np.linalg.det(Va.T @ Ub))), rtol=1e-10, atol=1e-12,
                 what="composition gap")


def test_r1_addition_subadditive_on_random_pairs() -> None:
    rng = np.random.default_rng(9)
    gaps = []
    for _ in range(300):
        m, n = rng.integers(2, 8, size=2)
        k1 = int(rng.integers(1, min(m, n)))
        k2 = int(rng.integers(1, min(m, n) - k1 + 1))
        A = np.exp(rng.uniform(-2, 2)) * _low_rank(rng, m, n, k1)
        B = np.exp(rng.uniform(-2, 2)) * _low_rank(rng, m, n, k2)
        g = theory.r1_addition_gap(A, B)
        assert g.condition_met, f"rank condition should hold generically: {g.ranks}"
        assert g.ranks == {"A": k1, "B": k2, "combined": k1 + k2}
        gaps.append(g.gap)
    assert min(gaps) >= -1e-9, f"R1(A+B) > R1(A) + R1(B) by {-min(gaps):.3g}"


def test_r1_gaps_report_unmet_rank_conditions() -> None:
    """Without the rank conditions the inequality can fail, and the report says so."""
    A, B = np.diag([10.0, 0.01]), np.diag([1.0, 0.0])
    g = theory.r1_composition_gap(A, B)
    assert not g.condition_met and g.ranks == {"A": 2, "B": 1, "combined": 1}
    assert_close([g.lhs, g.rhs], [2 * math.log(10), 2 * math.log(0.1)], rtol=1e-12, atol=0,
                 what="lhs, rhs")
    assert g.gap < 0
    h = theory.r1_addition_gap(np.diag([1.0, 0.0]), np.diag([1.0, 0.0]))
    assert not h.condition_met and h.ranks == {"A": 1, "B": 1, "combined": 1}
    assert_close(h.gap, -2 * math.log(2), rtol=1e-12, atol=0, what="addition gap, rank drop")


# --------------------------------------------------------------------------- depth fits


def test_fit_depth_exact_recovery() -> None:
    L = np.array([3, 4, 6, 8, 12, 16])
    fit = theory.fit_depth(L, 2.5 * L + 1.75)
    assert_close([fit.R0, fit.R1], [2.5, 1.75], rtol=1e-12, atol=1e-12, what="R0, R1")
    assert_close([fit.R0_err, fit.R1_err], [0, 0], rtol=0, atol=1e-10, what="errors")
    assert fit.R2 is None and fit.n == 6 and fit.dof == 4 and fit.k is None
    assert_close(fit.residuals, np.zeros(6), rtol=0, atol=1e-11, what="residuals")
    f2 = theory.fit_depth(L, 2.5 * L + 1.75 + 3.0 / L, order=2)
    assert_close([f2.R0, f2.R1, f2.R2], [2.5, 1.75, 3.0], rtol=1e-10, atol=1e-10,
                 what="R0, R1, R2 (order 2)")
    fk = theory.fit_depth(L, 2.0 * L - 0.5, k=2)
    assert_close([fk.R0, fk.R0_err, fk.R1], [2.0, 0.0, -0.5], rtol=1e-12, atol=1e-12,
                 what="fixed slope")
    assert_close(fit.predict(20), 51.75, rtol=1e-12, atol=0, what="predict")
    assert_close(theory.fit_depth([2, 4], [5.0, 9.0]).R0, 2.0, rtol=1e-12, atol=0,
                 what="two points")
    assert math.isnan(theory.fit_depth([2, 4], [5.0, 9.0]).R0_err)  # no dof, no error bar


def test_fit_depth_error_bars_are_honest() -> None:
    """Gaussian noise, many seeds: reported standard errors match the spread of the
    estimates, +-2 sigma covers the truth ~95% of the time (28 dof), and the Student-t
    95% interval covers it ~95% of the time with only 5 points."""
    a, b, noise = 2.0, 3.0, 0.4
    L = np.repeat(np.arange(3, 13), 3).astype(float)  # 30 runs, 10 depths
    rng = np.random.default_rng(10)
    R0, R0e, R1, R1e = [], [], [], []
    for _ in range(2000):
        fit = theory.fit_depth(L, a * L + b + noise * rng.standard_normal(L.size))
        R0.append(fit.R0)
        R0e.append(fit.R0_err)
        R1.append(fit.R1)
        R1e.append(fit.R1_err)
    R0, R0e, R1, R1e = map(np.asarray, (R0, R0e, R1, R1e))
    assert_close([R0.std(), R1.std()], [np.sqrt((R0e ** 2).mean()), np.sqrt((R1e ** 2).mean())],
                 rtol=0.06, atol=0, what="empirical spread vs reported standard errors")
    cover = [np.mean(np.abs(R0 - a) <= 2 * R0e), np.mean(np.abs(R1 - b) <= 2 * R1e)]
    assert_close(cover, [0.945, 0.945], rtol=0, atol=0.02, what="+-2 sigma coverage")
    Ls = np.array([4.0, 6, 8, 10, 12])
    hits = 0
    for _ in range(2000):
        lo, hi = theory.fit_depth(Ls, a * Ls + b + noise * rng.standard_normal(5)).interval("R0")
        hits += lo <= a <= hi
    assert_close(hits / 2000, 0.95, rtol=0, atol=0.02, what="95% t-interval coverage")


def test_fit_depth_bad_input() -> None:
    with pytest.raises(DataError, match="distinct depths"):
        theory.fit_depth([6, 6, 6], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match=">= 3 distinct depths"):
        theory.fit_depth([4, 6], [1.0, 2.0], order=2)
    with pytest.raises(DataError, match="finite"):
        theory.fit_depth([4, 6, 8], [1.0, float("nan"), 3.0])
    with pytest.raises(DataError, match="same length"):
        theory.fit_depth([4, 6, 8], [1.0, 2.0])
    with pytest.raises(DataError, match=">= 1"):
        theory.fit_depth([0, 6], [1.0, 2.0])
    with pytest.raises(ConfigError, match="order"):
        theory.fit_depth([4, 6], [1.0, 2.0], order=3)
    with pytest.raises(ConfigError, match="finite"):
        theory.fit_depth([4, 6], [1.0, 2.0], k=float("inf"))


def test_bad_matrices_and_depths() -> None:
    for bad in (np.array([[1.0, np.nan]]), np.array([[np.inf, 0.0]])):
        with pytest.raises(DataError, match="NaN or inf"):
            theory.linear_cost(bad, 3)
        with pytest.raises(DataError, match="NaN or inf"):
            theory.linear_expansion(bad)
    with pytest.raises(DataError, match="2-d"):
        theory.pdet(np.ones(3))
    with pytest.raises(DataError, match="empty"):
        theory.linear_cost(np.zeros((0, 3)), 2)
    with pytest.raises(DataError, match="numeric"):
        theory.linear_cost([["a", "b"]], 2)
    for L in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="L must be an integer >= 1"):
            theory.linear_cost(np.eye(2), L)
        with pytest.raises(ConfigError, match="L must be an integer >= 1"):
            theory.optimal_linear_factors(np.eye(2), L)
    with pytest.raises(ConfigError, match="too narrow"):
        theory.optimal_linear_factors(np.eye(3), 3, width=2)
    with pytest.raises(ConfigError, match="k must be"):
        theory.log_pdet(np.eye(2), 3)
    with pytest.raises(ConfigError, match="rtol"):
        theory.numerical_rank(np.eye(2), rtol=-1.0)
    with pytest.raises(DataError, match="do not compose"):
        theory.r1_composition_gap(np.eye(2), np.eye(3))
    with pytest.raises(DataError, match="cannot be added"):
        theory.r1_addition_gap(np.eye(2), np.eye(3))
    with pytest.raises(DataError, match="NaN or inf"):
        theory.r1_addition_gap(np.eye(2), np.full((2, 2), np.nan))


# --------------------------------------------------------------------------- bn rank


def test_slope_fit_is_ols_with_its_standard_error() -> None:
    """The one least-squares slope (claims, figures, fit_depth) against scipy's linregress
    (an independent implementation); edge cases give NaN, never a number."""
    from scipy import stats

    rng = np.random.default_rng(0)
    x = np.repeat([8.0, 10, 12, 14, 16, 20], 3)  # repeated depths (seeds)
    y = 1.9 * x + 16 + rng.normal(0, 0.5, x.size)
    ref = stats.linregress(x, y)
    b, se = theory.slope_fit(x, y)
    assert_close(b, ref.slope, rtol=1e-12, atol=0, what="slope")
    assert_close(se, ref.stderr, rtol=1e-10, atol=0, what="standard error")
    fit = theory.fit_depth(x, y)  # the same fit through fit_depth
    assert_close(fit.R0, ref.slope, rtol=1e-12, atol=0, what="fit_depth R0")
    assert_close(fit.R0_err, ref.stderr, rtol=1e-10, atol=0, what="fit_depth R0_err")
    assert math.isnan(theory.slope_fit([1.0, 2.0], [1.0, 3.0])[1])  # 2 points: no error
    assert all(math.isnan(v) for v in theory.slope_fit([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))
    assert all(math.isnan(v) for v in theory.slope_fit([1.0], [1.0]))


# --------------------------------------------------------------------------- runs and CLI


def _runs_frame() -> pd.DataFrame:
    rows = []
    for L, n2 in ((4, 9.0), (6, 13.1), (8, 16.9), (8, 17.1)):
        rows.append({"task": "composite", "model": "mlp", "width": "64", "lam": 0.002,
                     "k": 2, "depth": L, "param_norm2": n2, "status": "completed"})
    rows.append({"task": "composite", "model": "mlp", "width": "64", "lam": 0.002, "k": 2,
                 "depth": 10, "param_norm2": float("nan"), "status": "diverged"})
    rows.append({"task": "teacher", "model": "mlp", "width": "64", "lam": 0.002, "k": 4,
                 "depth": 6, "param_norm2": 30.0, "status": "completed"})
    return pd.DataFrame(rows)


def test_fit_depth_runs_groups_and_reports_skipped() -> None:
    out = fit_depth_runs(_runs_frame())
    assert list(out["task"]) == ["composite", "teacher"]
    comp, teach = out.iloc[0], out.iloc[1]
    ref = theory.fit_depth([4, 6, 8, 8], [9.0, 13.1, 16.9, 17.1])
    assert_close([comp["R0"], comp["R0_err"], comp["R1"], comp["R1_err"]],
                 [ref.R0, ref.R0_err, ref.R1, ref.R1_err], rtol=1e-14, atol=0,
                 what="group fit vs fit_depth")
    assert comp["depths"] == "4,6,8" and comp["n_runs"] == 4 and comp["k_task"] == 2
    assert teach["note"].startswith("skipped") and math.isnan(teach["R0"])
    with pytest.raises(DataError, match="enough distinct depths"):
        fit_depth_runs(_runs_frame().query("task == 'teacher'"))


def _tiny_store(tmp_path, depths) -> str:  # type: ignore[no-untyped-def]
    store = str(tmp_path / "store")
    for L in depths:
        cfg = bn.RunConfig(task=bn.TaskSpec("linear", (("d_in", 4), ("d_out", 4), ("k", 2),
                                                       ("n_test", 8), ("n_train", 16))),
                           model=bn.ModelSpec("linear", 4, L),
                           stages=(bn.Stage("adam", 1e-2, 0.01, 30),), dtype="float64",
                           device="cpu", checkpoint_every=None)
        bn.run(cfg, store, progress=False)
    return store


def test_cli_fit_depth(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    store = _tiny_store(tmp_path, [2, 3, 4])
    assert main(["fit-depth", store, "--format", "csv"]) == 0
    got = pd.read_csv(io.StringIO(capsys.readouterr().out))
    df = bn.runs(store)
    ref = theory.fit_depth(df["depth"], df["param_norm2"])
    assert len(got) == 1 and got.loc[0, "depths"] == "2,3,4"
    assert_close(got.loc[0, ["R0", "R0_err", "R1", "R1_err"]].to_numpy(float),
                 [ref.R0, ref.R0_err, ref.R1, ref.R1_err], rtol=1e-12, atol=0,
                 what="CLI csv vs fit_depth")
    assert main(["fit-depth", store, "--k", "2", "--format", "json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js[0]["R0"] == 2.0 and js[0]["R0_err"] == 0.0
    assert main(["fit-depth", store]) == 0
    assert "±" in capsys.readouterr().out
    assert main(["fit-depth", store, "--where", "depth = 3"]) == 2
    e = capsys.readouterr().err.strip()
    assert e.startswith("error:") and "depths [3]" in e and "\n" not in e
    assert main(["fit-depth", str(tmp_path / "nowhere")]) == 2


# --------------------------------------------------------------------------- training


def _check_trained_against_theory(net: bn.DeepLinear, k: int) -> tuple[float, float]:
    """Relative excess of param_norm2 over linear_cost(end_to_end) and the worst relative
    error of a layer's top-k singular values vs s_i^(1/L) (both asserted by the callers)."""
    L = net.depth
    A = net.end_to_end()
    s = torch.linalg.svdvals(A)[:k]
    rel_cost = float(bn.param_norm2(net).detach()) / theory.linear_cost(A, L) - 1
    worst = 0.0
    for W in net.weights():
        sw = torch.linalg.svdvals(W.detach())[:k]
        worst = max(worst, float(((sw - s ** (1 / L)).abs() / s ** (1 / L)).max()))
    return rel_cost, worst


def test_trained_deep_linear_agrees_with_theory_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The exact CLI recipe from the docs: Adam at 1e-2 then 1e-3, lam = 0.02, float64."""
    argv = ["train", "--task", "linear", "--model", "linear", "--depth", "4", "--width", "8",
            "--n-train", "64", "--dtype", "float64", "--device", "cpu",
            "--stage", "adam:1e-2:0.02:1500", "--stage", "adam:1e-3:0.02:1000",
            "--out", str(tmp_path), "--name", "lin", "--quiet"]
    assert main(argv) == 0
    r = bn.load_run(tmp_path / "lin")
    assert r.status == "completed" and r.summary["final"]["rel_fit"] < 1e-3
    rel_cost, worst = _check_trained_against_theory(r.model, r.task.bn_rank)
    assert_close(rel_cost, 0.0, rtol=0, atol=0.01, what="param_norm2 / linear_cost - 1")
    assert_close(worst, 0.0, rtol=0, atol=0.02, what="layer singular values vs s^(1/L)")


def test_trained_deep_linear_agrees_with_theory_api() -> None:
    task = bn.make_task("linear", n_train=64, n_test=16, d_in=6, d_out=5, k=2)
    net = bn.DeepLinear(6, 6, 6, 5, seed=1, dtype=torch.float64)
    before = _check_trained_against_theory(net, 2)
    assert before[0] > 0.1  # the random init is far from the theory: the test can fail
    bn.train(net, task, [bn.Stage("adam", 1e-2, 0.02, 1500), bn.Stage("adam", 1e-3, 0.02, 1000)],
             progress=False, log_every=2500)
    rel_cost, worst = _check_trained_against_theory(net, 2)
    assert_close(rel_cost, 0.0, rtol=0, atol=0.01, what="param_norm2 / linear_cost - 1")
    assert_close(worst, 0.0, rtol=0, atol=0.02, what="layer singular values vs s^(1/L)")
    sw = torch.linalg.svdvals(net.weights()[2].detach())
    assert float(sw[2]) < 0.01 * float(sw[1])  # the rest of the spectrum has collapsed


def test_theory_imports_no_run_store() -> None:
    """``import bnstruct.theory`` (closed forms) in a fresh interpreter imports no store, no
    training, no I/O modules (the package ``__init__`` loads its names lazily)."""
    import subprocess
    import sys

    code = ("import json, sys\n"
            "import bnstruct.theory\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('bnstruct'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = set(json.loads(out))
    assert "bnstruct.theory" in loaded
    assert not loaded & {"bnstruct.store", "bnstruct.training", "bnstruct.experiments",
                         "bnstruct.executors", "bnstruct.depthfit", "bnstruct.diagnostics"}, loaded
    assert not hasattr(theory, "fit_depth_runs")  # moved to bnstruct.depthfit

