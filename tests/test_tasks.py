import numpy as np
import pytest
import torch

import bnstruct as bn
from bnstruct import tasks
from bnstruct.testing import assert_close


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_tasks_are_deterministic_and_well_formed(name):
    a, b = tasks.make_task(name, seed=3), tasks.make_task(name, seed=3)
    for x, y in ((a.X, b.X), (a.Y, b.Y), (a.X_test, b.X_test), (a.Y_test, b.Y_test)):
        assert torch.equal(x, y)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != tasks.make_task(name, seed=4).fingerprint()
    assert a.X.dtype == torch.float64 and torch.isfinite(a.X).all() and torch.isfinite(a.Y).all()
    assert a.X.shape[0] == a.Y.shape[0] and a.X_test.shape[0] == a.Y_test.shape[0]


def _numerical_rank(M: torch.Tensor, rtol: float = 1e-9) -> int:
    s = torch.linalg.svdvals(M)
    return int((s > rtol * s[0]).sum())


@pytest.mark.parametrize("k", [1, 2, 3])
def test_composite_factors_through_k_latents(k):
    t = tasks.composite(n_train=300, n_test=10, k=k, seed=1)
    assert t.bn_rank == k and t.d_in == 20 and t.d_out == 20
    # y depends on z only through z_1..z_k: its Jacobian wrt z (finite differences through the
    # same generator) has rank k. Check via the data: Y is a function of Z[:, :k].
    Z = t.meta["Z"]
    assert Z.shape == (300, 8)
    # y is an affine image of h(z_1..z_k): regress Y on [h(Z[:, :k]), 1] exactly.
    H = torch.cat([t.meta["h"](Z[:, :k]), torch.ones(300, 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(H, t.Y).solution
    assert_close(H @ coef, t.Y, rtol=0, atol=1e-9, what="Y as a function of z_1..z_k")
    # and the Jacobian of z -> h(z_1..z_k) has rank exactly k
    J = torch.autograd.functional.jacobian(lambda z: t.meta["h"](z[:k][None])[0], Z[0])
    assert _numerical_rank(J) == k
    # while x = g(z) embeds all 8 latents
    Jg = torch.autograd.functional.jacobian(lambda z: t.meta["g"](z[None])[0], Z[0])
    assert _numerical_rank(Jg) == 8
    assert_close(t.Y.pow(2).sum(1).mean(), 1.0, rtol=1e-12, atol=0, what="E||y||^2")
    assert_close(t.X.pow(2).sum(1).mean(), 1.0, rtol=1e-12, atol=0, what="E||x||^2")


def test_linear_task_has_the_requested_matrix():
    t = tasks.linear(k=2, d_in=6, d_out=5, singular_values=(3.0, 0.5), seed=2)
    A = t.meta["A"]
    assert_close(torch.linalg.svdvals(A)[:3], [3.0, 0.5, 0.0], rtol=1e-12, atol=1e-12,
                 what="singular values of A")
    assert_close(t.Y, t.X @ A.T, rtol=1e-12, atol=1e-12, what="Y = X A^T")
    assert _numerical_rank(t.Y) == 2


def test_symmetry_task_is_rotation_invariant():
    t = tasks.symmetry(n_train=100, n_test=50, seed=0)
    inv = t.meta["invariants"]
    assert_close(inv[:, 0], t.X[:, :2].norm(dim=1), rtol=1e-14, atol=0, what="r")
    assert t.bn_rank == 2
    # Same invariants => same outputs: rebuild the map from invariants by nearest neighbour on
    # an exact duplicate (rotate a point and query it through the generator's dependence).
    th = 0.7
    R = torch.tensor([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]],
                     dtype=torch.float64)
    Xr = t.X @ R.T
    inv_r = torch.stack([Xr[:, :2].norm(dim=1), Xr[:, 2]], 1)
    assert_close(inv_r, inv, rtol=1e-12, atol=1e-12, what="invariants under rotation")


def test_teacher_has_bottleneck_rank_k():
    t = tasks.teacher(n_train=200, n_test=20, k=3, seed=0)
    assert t.bn_rank == 3 and t.d_in == 50 and t.d_out == 50


def test_digits_ships_with_sklearn():
    t = tasks.digits(seed=0)
    assert t.d_in == 64 and t.d_out == 10
    assert t.n_train + t.X_test.shape[0] == 1797
    assert torch.equal(t.Y.sum(1), torch.ones(t.n_train, dtype=torch.float64))
    assert_close(t.X.mean(0), torch.zeros(64), rtol=0, atol=1e-10, what="standardized mean")


def test_from_arrays_and_npz(tmp_path):
    X, Y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40.0)
    t = bn.Task.from_arrays(X, Y, test_fraction=0.25, seed=1)
    assert t.n_train == 30 and t.X_test.shape == (10, 3) and t.d_out == 1
    np.savez(tmp_path / "d.npz", X=X, Y=Y)
    t2 = tasks.from_npz(tmp_path / "d.npz", seed=1, test_fraction=0.25)
    assert torch.equal(t.X, t2.X) and torch.equal(t.Y_test, t2.Y_test)


def test_bad_data_is_rejected(tmp_path):
    X = np.zeros((5, 2))
    with pytest.raises(bn.DataError, match="rows"):
        bn.Task.from_arrays(X, np.zeros(4))
    Xn = X.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(bn.DataError, match="NaN or inf"):
        bn.Task.from_arrays(Xn, np.zeros(5))
    with pytest.raises(bn.DataError, match="empty"):
        bn.Task.from_arrays(np.zeros((0, 2)), np.zeros(0), np.zeros((1, 2)), np.zeros(1))
    np.savez(tmp_path / "o.npz", X=np.array([object()] * 3, dtype=object), Y=np.zeros(3))
    with pytest.raises(bn.DataError, match="pickle"):
        tasks.from_npz(tmp_path / "o.npz")
    with pytest.raises(bn.DataError, match="lacks"):
        np.savez(tmp_path / "m.npz", X=X)
        tasks.from_npz(tmp_path / "m.npz")
    with pytest.raises(bn.ConfigError, match="unknown task"):
        tasks.make_task("nope")
    with pytest.raises(bn.ConfigError, match="no option"):
        tasks.make_task("symmetry", k=3)
