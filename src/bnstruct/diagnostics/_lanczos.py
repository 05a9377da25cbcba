"""Largest algebraic eigenvalue of a symmetric operator from matrix-vector products.

Lanczos with full reorthogonalization from a seeded random start vector, stopped as soon as
the Ritz pair of the largest Ritz value has residual :math:`\\|A y - \\theta y\\| =
\\beta_j |e_j^T s| \\le \\mathrm{tol}\\, |\\theta|` (ARPACK's criterion); if that does not
happen within ``maxiter`` steps, implicitly restarted Lanczos (ARPACK,
:func:`scipy.sparse.linalg.eigsh`, ``which="LA"``) takes over. Results are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["top_eig", "dense_top_eig", "DENSE_MAX", "LANCZOS_MAXITER"]

#: ``method="auto"`` forms the matrix (``n`` matvecs or a direct formula) up to this size.
DENSE_MAX = 64
#: steps of plain Lanczos before ARPACK's restarted Lanczos takes over
LANCZOS_MAXITER = 200


def _lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, v0: torch.Tensor,
             tol: float, maxiter: int) -> float | None:
    """Largest Ritz value once converged (``None`` if not within ``maxiter`` steps)."""
    q = v0 / v0.norm()
    Q = [q]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(min(n, maxiter)):
        w = matvec(Q[j]).to(q.dtype)
        a = float(w @ Q[j])
        alphas.append(a)
        B = torch.stack(Q, 1)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - B @ (B.T @ w)
        b = float(w.norm())
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        vals, vecs = np.linalg.eigh(T)
        theta = float(vals[-1])
        scale = max(abs(theta), float(np.abs(vals).max()), np.finfo(np.float64).tiny)
        if b * abs(vecs[-1, -1]) <= tol * scale or j + 1 == n or b <= 1e-300:
            return theta
        betas.append(b)
        Q.append(w / b)
    return None


def top_eig(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *, dtype: torch.dtype,
            device: torch.device | str = "cpu", tol: float = 1e-10, seed: int = 0,
            maxiter: int | None = None) -> float:
    """Largest algebraic eigenvalue of the symmetric ``n x n`` operator ``v -> matvec(v)``.

    ``matvec`` takes and returns flat tensors of length ``n``. ``tol`` is the relative
    accuracy of the Ritz value's residual (module docstring). For ``n <= 2`` the matrix is
    formed from ``n`` matvecs. ``maxiter`` bounds the plain Lanczos steps
    (:data:`LANCZOS_MAXITER`) before the ARPACK fallback."""
    if n < 1:
        raise ConfigError("the operator is empty")
    if n <= 2:
        return dense_top_eig(matvec, n, dtype=dtype, device=device)
    v0n = np.random.default_rng(seed).standard_normal(n)
    v0 = torch.as_tensor(v0n, dtype=dtype, device=device)
    got = _lanczos(matvec, n, v0, tol, maxiter or LANCZOS_MAXITER)
    if got is not None:
        return got
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    def mv(x: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.ascontiguousarray(x).reshape(-1), dtype=dtype, device=device)
        return matvec(v).detach().cpu().double().numpy()

    op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
    try:
        vals = eigsh(op, k=1, which="LA", v0=v0n, tol=tol, return_eigenvectors=False)
    except ArpackNoConvergence as e:  # pragma: no cover - reported, not hidden
        if len(e.eigenvalues):
            return float(np.max(e.eigenvalues))
        raise
    return float(vals[0])


def dense_top_eig(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *,
                  dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """Form the matrix column by column (``n`` matvecs), symmetrize, ``eigvalsh``."""
    eye = torch.eye(n, dtype=dtype, device=device)
    M = torch.stack([matvec(eye[i]) for i in range(n)], dim=1)
    return float(torch.linalg.eigvalsh((M + M.T) / 2)[-1])
