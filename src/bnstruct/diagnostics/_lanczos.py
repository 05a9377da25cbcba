"""Largest algebraic eigenvalue of a symmetric operator from matrix-vector products.

Implicitly restarted Lanczos (ARPACK, :func:`scipy.sparse.linalg.eigsh`, ``which="LA"``) on a
:class:`scipy.sparse.linalg.LinearOperator` that calls a torch matvec. The start vector is
drawn from a seeded generator, so results are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["top_eig", "DENSE_MAX"]

#: ``method="auto"`` forms the matrix (``n`` matvecs or a direct formula) up to this size.
DENSE_MAX = 64


def top_eig(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *, dtype: torch.dtype,
            device: torch.device | str = "cpu", tol: float = 1e-10, seed: int = 0,
            maxiter: int | None = None) -> float:
    """Largest algebraic eigenvalue of the symmetric ``n x n`` operator ``v -> matvec(v)``.

    ``matvec`` takes and returns flat tensors of length ``n``. ``tol`` is ARPACK's relative
    accuracy of the Ritz value. For ``n <= 2`` the matrix is formed from ``n`` matvecs.
    """
    if n < 1:
        raise ConfigError("the operator is empty")
    if n <= 2:
        return dense_top_eig(matvec, n, dtype=dtype, device=device)
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    def mv(x: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.ascontiguousarray(x).reshape(-1), dtype=dtype, device=device)
        return matvec(v).detach().cpu().double().numpy()

    op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        vals = eigsh(op, k=1, which="LA", v0=v0, tol=tol, maxiter=maxiter,
                     return_eigenvectors=False)
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
