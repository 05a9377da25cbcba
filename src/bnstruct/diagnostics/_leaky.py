r"""The Hamiltonian view of leaky ResNets (Jacot & Kaiser, arXiv 2405.17573; docs/theory.md,
section "Leaky ResNets"): the Cost of Identity, the kinetic and potential energies and the
Hamiltonian along depth, measured from the representations of a
:class:`~bnstruct.LeakyResNet` in float64.

Orientation: the package's, points in rows. A representation ``A`` is ``[N, w]``,
:math:`\sigma(A) = (\mathrm{relu}(A), 1)` is ``[N, w+1]`` and
:math:`K = \sigma(A)\sigma(A)^T` is ``[N, N]`` (the paper's :math:`\sigma(A)^T\sigma(A)` for
its ``w x N`` matrices). For ``M [N, w]``:

.. math::

    \|M\|_K^2 = \mathrm{Tr}[M^T K^{+} M], \qquad \mathrm{COI}(A) = \|A\|_K^2
    = \|\sigma(A)^{+} A\|_F^2 .

The stable version replaces :math:`K^+` by :math:`(K + \gamma I)^{-1}` with
:math:`\gamma = \gamma_0 \|K\|_{op}` (a Cholesky solve; ``gamma0 = 0`` is the exact
pseudo-inverse, through the SVD of :math:`\sigma(A)` with numpy's rank rule in float64).

Layer ``l`` (``1..L``) is the step from :math:`A_{\ell-1}` (at :math:`p_{\ell-1}`) to
:math:`A_\ell` (at :math:`p_\ell = \rho_1 + \dots + \rho_\ell`):
:math:`\dot A_\ell = (A_\ell - A_{\ell-1}) / \rho_\ell`, which is exactly the flow's right
side :math:`-\tilde L A + \sigma(A) W_\ell^T` at :math:`A_{\ell-1}`; so the step's energies
are taken at its input, with :math:`K_{\ell-1}`:

.. math::

    \mathrm{kinetic}_\ell = \frac{1}{2\tilde L}\|\dot A_\ell\|_{K_{\ell-1}}^2, \quad
    \mathrm{potential}_\ell = \frac{\tilde L}{2}\mathrm{COI}(A_{\ell-1}), \quad
    H_\ell = \mathrm{kinetic}_\ell - \mathrm{potential}_\ell .

With targets and ``lam``: :math:`B_\ell = -\frac1\lambda \partial_{A_\ell}\frac1N
\|f(X) - Y\|^2` (so :math:`W_\ell = \tilde L B_\ell^T\sigma(A_{\ell-1})` at a critical point)
and the momentum forms :math:`H^{mom}_\ell = \frac{\tilde L}{2}\|\sigma(A_{\ell-1})^T
B_\ell\|_F^2 - \tilde L\,\mathrm{Tr}[B_\ell^T A_{\ell-1}]` (the paper's) and
:math:`H^{proj}_\ell`, the same with :math:`A_{\ell-1}` projected on the column space of
:math:`\sigma(A_{\ell-1})`. At a critical point :math:`H^{proj} = H` (``gamma0 = 0``)
exactly, and :math:`H^{mom} = H^{proj}` when :math:`A \ge 0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import conventions
from ..errors import ConfigError, DataError

__all__ = ["cost_of_identity", "cost_of_identity_lower", "nonneg_gap", "k_norm2",
           "leaky_table", "leaky_summary", "LEAKY_COLUMNS", "LEAKY_WEIGHT_VALUES"]

#: weight singular values ``w_s1 .. w_s<n>`` (relu part of ``W_l``) in the table
LEAKY_WEIGHT_VALUES = 6

#: the per-layer columns of :func:`leaky_table`, in order
LEAKY_COLUMNS = ("layer", "p_in", "p", "rho", "coi", "coi_lower", "nonneg_gap",
                 "rep_energy_rank", "coi_in", "kinetic", "potential", "hamiltonian", "speed",
                 "speed_K", "w_norm2", "b_norm2", "balance", "w_gap_rank",
                 *[f"w_s{i}" for i in range(1, LEAKY_WEIGHT_VALUES + 1)],
                 "hamiltonian_momentum", "hamiltonian_projected")


def _as_matrix(A: Any, what: str = "A") -> torch.Tensor:
    t = torch.as_tensor(np.asarray(A) if not torch.is_tensor(A) else A)
    if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ConfigError(f"{what} must be a non-empty 2-d array [N, w], got shape "
                          f"{tuple(t.shape)}")
    if t.is_complex() or not t.is_floating_point() and t.dtype == torch.bool:
        raise ConfigError(f"{what} must be real-valued")
    t = t.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{what} has non-finite entries")
    return t


def _check_gamma0(gamma0: Any) -> float:
    if isinstance(gamma0, bool) or not isinstance(gamma0, int | float) \
            or not math.isfinite(gamma0) or gamma0 < 0:
        raise ConfigError(f"gamma0 must be a finite number >= 0, got {gamma0!r}")
    return float(gamma0)


def sigma(A: torch.Tensor) -> torch.Tensor:
    """:math:`\\sigma(A) = (\\mathrm{relu}(A), 1)`: ``[N, w] -> [N, w+1]``."""
    return torch.cat([torch.relu(A), torch.ones_like(A[:, :1])], 1)


def k_norm2(M: torch.Tensor, S: torch.Tensor, gamma0: float) -> float:
    r""":math:`\mathrm{Tr}[M^T (K + \gamma I)^{-1} M]`, :math:`K = S S^T`,
    :math:`\gamma = \gamma_0\|K\|_{op}` (``gamma0 = 0``: :math:`K^+`), float64; ``M [N, w]``,
    ``S [N, m]``."""
    M, S = M.double(), S.double()
    if gamma0 == 0.0:
        U, s, _ = torch.linalg.svd(S, full_matrices=False)
        if s.numel() == 0 or float(s[0]) == 0.0:
            return 0.0
        keep = s > s[0] * max(S.shape) * torch.finfo(torch.float64).eps
        C = (U[:, keep].T @ M) / s[keep, None]
        return float(C.pow(2).sum())
    K = S @ S.T
    g = gamma0 * float(torch.linalg.matrix_norm(K, ord=2))
    if g == 0.0:
        return 0.0 if float(M.abs().max()) == 0.0 else math.inf
    Lc = torch.linalg.cholesky(K + g * torch.eye(K.shape[0], dtype=K.dtype))
    return float((M * torch.cholesky_solve(M, Lc)).sum())


class _Factor:
    r"""The thin SVD :math:`\sigma(A) = U\,\mathrm{diag}(s)\,V^T` of one representation,
    to apply :math:`(K + \gamma I)^{-1}` to many ``M`` in :math:`O(N w^2)` (Woodbury, exact):
    :math:`\mathrm{Tr}[M^T(K+\gamma I)^{-1}M] = \sum_i \|u_i^T M\|^2/(s_i^2+\gamma) +
    \|M - UU^TM\|^2/\gamma` (``gamma0 = 0``: the first sum over the values above numpy's
    rank rule, i.e. :math:`K^+`). The same numbers as :func:`k_norm2`'s ``N x N`` solve
    (tested against dense references), without forming ``K``."""

    def __init__(self, S: torch.Tensor, gamma0: float) -> None:
        self.U, self.s, _ = torch.linalg.svd(S.double(), full_matrices=False)
        s0 = float(self.s[0]) if self.s.numel() else 0.0
        self.gamma = gamma0 * s0 ** 2
        self.keep = self.s > s0 * max(S.shape) * torch.finfo(torch.float64).eps
        self.zero = s0 == 0.0

    def norm2(self, M: torch.Tensor) -> float:
        M = M.double()
        if self.zero:
            return 0.0 if float(M.abs().max()) == 0.0 or self.gamma == 0.0 else math.inf
        C = self.U.T @ M
        if self.gamma == 0.0:
            return float((C[self.keep] / self.s[self.keep, None]).pow(2).sum())
        inside = float((C.pow(2) / (self.s.pow(2) + self.gamma)[:, None]).sum())
        return inside + float((M - self.U @ C).pow(2).sum()) / self.gamma


def cost_of_identity(A: Any, gamma0: float = 0.0) -> float:
    r"""The Cost of Identity of a representation ``A [N, w]`` (points in rows):
    :math:`\mathrm{COI}(A) = \mathrm{Tr}[A^T K^+ A] = \|\sigma(A)^+ A\|_F^2`,
    :math:`K = \sigma(A)\sigma(A)^T`, :math:`\sigma(A) = (\mathrm{relu}(A), 1)`.

    ``gamma0 > 0``: the stable version, :math:`(K + \gamma I)^{-1}` with
    :math:`\gamma = \gamma_0\|K\|_{op}` (a Cholesky solve of the ``N x N`` system);
    ``gamma0 = 0`` the exact pseudo-inverse (SVD of :math:`\sigma(A)`, values above
    :math:`s_1 \max(N, w+1)\,\epsilon_{64}`). Float64.

    For ``A >= 0`` it is ``rank A`` (when the constant vector is not in the row space of
    ``A``, e.g. any ``A`` in general position with ``N > w + 1``); always
    :math:`\ge \|A\|_*^2/\|A\|_F^2` (:func:`cost_of_identity_lower`). Example: an ``[N, 3]``
    non-negative matrix of rank 3 has COI 3."""
    t = _as_matrix(A)
    return k_norm2(t, sigma(t), _check_gamma0(gamma0))


def cost_of_identity_lower(A: Any) -> float:
    r""":math:`\|A\|_*^2 / \|A\|_F^2` (nuclear over Frobenius norm, squared): the lower bound
    of the Cost of Identity; 0 for ``A = 0``."""
    t = _as_matrix(A)
    s = torch.linalg.svdvals(t)
    f2 = float(s.pow(2).sum())
    return float(s.sum()) ** 2 / f2 if f2 > 0 else 0.0


def nonneg_gap(A: Any) -> float:
    r""":math:`\|A - \mathrm{relu}(A)\|_F / \|A\|_F` (0 for non-negative ``A``; NaN for 0)."""
    t = _as_matrix(A)
    n = float(t.norm())
    return float((t - torch.relu(t)).norm()) / n if n > 0 else math.nan


def _momentum(model: Any, X: torch.Tensor, Y: torch.Tensor, lam: float
              ) -> list[torch.Tensor]:
    r""":math:`B_\ell = -\frac1\lambda\partial_{A_\ell}\frac1N\|f(X) - Y\|^2`, ``l = 1..L``
    (float64 model, autograd)."""
    with torch.enable_grad():
        reps = []
        A = X @ model.inp.T
        for W, rho in zip(model.W, model.steps, strict=True):
            A = model._layer(A, W, rho)
            reps.append(A)
        fit = (A @ model.out.T - Y).pow(2).sum() / X.shape[0]
        grads = torch.autograd.grad(fit, reps)
    return [-g.detach() / lam for g in grads]


def _spread(v: np.ndarray) -> float:
    return float(np.max(v) - np.min(v)) if v.size else math.nan


@torch.no_grad()
def leaky_table(model: Any, X: Any, *, Y: Any = None, lam: float | None = None,
                gamma0: float = conventions.COI_GAMMA0
                ) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    r"""Per layer ``l = 1..L`` of a :class:`~bnstruct.LeakyResNet` on the points ``X``
    (``[N, d_in]``), float64 (a float64 copy of the model; the model is not changed):
    ``(table, weight_spectra, rep_spectra)``.

    Columns (:data:`LEAKY_COLUMNS`, module docstring for the definitions): ``p_in``, ``p``
    (:math:`p_{\ell-1}, p_\ell`), ``rho``; of the layer's output :math:`A_\ell`: ``coi``
    (stable, ``gamma0``), ``coi_lower``, ``nonneg_gap``, ``rep_energy_rank`` (of the centered
    :math:`A_\ell`, :func:`~bnstruct.conventions.energy_rank`); of the step: ``coi_in``
    (COI of its input), ``kinetic``, ``potential``, ``hamiltonian``, ``speed``
    (:math:`\|\dot A_\ell\|_F/\sqrt N`), ``speed_K`` (:math:`\|\dot A_\ell\|_{K_{\ell-1}}`,
    the speed the Hamiltonian predicts: :math:`\tilde L\sqrt{\mathrm{COI} + 2H/\tilde L}`);
    of ``W_l``: ``w_norm2`` (:math:`\|W_\ell\|_F^2`, bias column included), ``b_norm2``
    (the bias column's), ``balance``
    (:math:`\|W_\ell\|_F^2 - \tilde L\sum_{j\le\ell}\rho_j\|b_j\|^2`, constant in ``l`` at a
    critical point: prediction 5), ``w_s1..`` and ``w_gap_rank``
    (:func:`~bnstruct.conventions.gap_rank`) of its relu part ``W_l[:, :w]``; with ``Y`` and
    ``lam``: ``hamiltonian_momentum`` and ``hamiltonian_projected`` (else NaN).
    ``weight_spectra[l-1]``: singular values of ``W_l[:, :w]``; ``rep_spectra[l-1]``: of the
    centered :math:`A_\ell`."""
    from ..experiments._records import float64_copy
    from ..models.leaky import LeakyResNet

    if not isinstance(model, LeakyResNet):
        raise ConfigError("leaky_table needs a bnstruct.LeakyResNet")
    g0 = _check_gamma0(gamma0)
    m = float64_copy(model)
    assert isinstance(m, LeakyResNet)
    X64 = _as_matrix(X, "X")
    if X64.shape[1] != m.d_in:
        raise ConfigError(f"X has {X64.shape[1]} columns; the model takes {m.d_in} inputs")
    reps = m.representations(X64)
    Lt, N, w = m.leak, X64.shape[0], m.width
    rho = (m.steps / m.steps.sum()).tolist()  # (a float32 buffer sums to 1 up to rounding)
    p = np.cumsum([0.0, *rho])
    B: Sequence[torch.Tensor | None] = [None] * m.depth
    if Y is not None and lam is not None and lam > 0:
        B = _momentum(m, X64, _as_matrix(Y, "Y"), float(lam))
    facs = [_Factor(sigma(A), g0) for A in reps]
    coi = [f.norm2(A) for f, A in zip(facs, reps, strict=True)]
    rows, wspec, rspec = [], [], []
    cum_b = 0.0
    for l in range(1, m.depth + 1):
        A0, A1, W = reps[l - 1], reps[l], m.W[l - 1]
        S0 = sigma(A0)
        Adot = (A1 - A0) / rho[l - 1]
        kin = facs[l - 1].norm2(Adot) / (2 * Lt)
        pot = Lt / 2 * coi[l - 1]
        ws = torch.linalg.svdvals(W[:, :w]).numpy()
        rs = torch.linalg.svdvals(conventions.center(A1)).numpy()
        wspec.append(ws)
        rspec.append(rs)
        b2 = float(W[:, w].pow(2).sum())
        cum_b += rho[l - 1] * b2
        w2 = float(W.pow(2).sum())
        hm = hp = math.nan
        Bl = B[l - 1]
        if Bl is not None:
            q = float((S0.T @ Bl).pow(2).sum()) * Lt / 2
            hm = q - Lt * float((Bl * A0).sum())
            U = facs[l - 1].U[:, facs[l - 1].keep]
            hp = q - Lt * float((Bl * (U @ (U.T @ A0))).sum())
        row: dict[str, Any] = {
            "layer": l, "p_in": float(p[l - 1]), "p": float(p[l]), "rho": rho[l - 1],
            "coi": coi[l], "coi_lower": cost_of_identity_lower(A1), "nonneg_gap":
                nonneg_gap(A1), "rep_energy_rank": conventions.energy_rank(rs),
            "coi_in": coi[l - 1], "kinetic": kin, "potential": pot, "hamiltonian": kin - pot,
            "speed": float(Adot.norm()) / math.sqrt(N), "speed_K": math.sqrt(max(2 * Lt * kin,
                                                                              0.0)),
            "w_norm2": w2, "b_norm2": b2, "balance": w2 - Lt * cum_b,
            "w_gap_rank": conventions.gap_rank(ws)[0] if ws.size >= 2 else 0}
        for i in range(LEAKY_WEIGHT_VALUES):
            row[f"w_s{i + 1}"] = float(ws[i]) if i < ws.size else math.nan
        row["hamiltonian_momentum"], row["hamiltonian_projected"] = hm, hp
        rows.append(row)
    return pd.DataFrame(rows, columns=list(LEAKY_COLUMNS)), wspec, rspec


def leaky_summary(table: pd.DataFrame, weight_spectra: Sequence[np.ndarray], leak: float
                  ) -> dict[str, Any]:
    r"""The summary of :func:`leaky_table` over the interior layers
    (:func:`~bnstruct.conventions.interior_layers`):

    - ``hamiltonian_spread``: :math:`(\max H - \min H)` over the interior divided by the
      larger of the same spread of the kinetic and the potential part (small: H constant
      while its parts move, prediction 1);
    - ``hamiltonian_mean`` and ``minus_2H_over_leak`` (:math:`-2\bar H/\tilde L`, which rises
      to ``k*`` from below, prediction 2);
    - ``coi_min`` (over the representations :math:`A_1..A_L`) and ``coi_min_p``, its ``p``;
      ``coi_input`` of :math:`A_0`;
    - ``balance_spread``: spread of ``balance`` over the interior divided by the larger
      spread of its two terms, ``w_norm2`` and :math:`\tilde L\int_0^p\|b\|^2`
      (prediction 5: small);
    - ``bottleneck_rank`` of the relu parts' spectra
      (:func:`~bnstruct.conventions.bottleneck_rank`; ``jacobian_rank`` fallback: the
      smallest ``rep_energy_rank``) and ``nonneg_gap_middle`` (largest over
      :func:`~bnstruct.conventions.middle_layers`)."""
    L = len(table)
    inner = table[table["layer"].isin(conventions.interior_layers(L))]
    H = inner["hamiltonian"].to_numpy(float)
    parts = max(_spread(inner["kinetic"].to_numpy(float)),
                _spread(inner["potential"].to_numpy(float)))
    i = int(np.argmin(table["coi"].to_numpy(float)))
    bal = _spread(inner["balance"].to_numpy(float))
    # the scale it is judged on: the larger change of its two terms over the interior
    wn = max(_spread(inner["w_norm2"].to_numpy(float)),
             _spread((inner["w_norm2"] - inner["balance"]).to_numpy(float)))
    k, method = conventions.bottleneck_rank(
        list(weight_spectra), jacobian_rank=int(table["rep_energy_rank"].min()))
    mid = table[table["layer"].isin(conventions.middle_layers(L))]
    hm = float(np.mean(H)) if H.size else math.nan
    return {"leak": float(leak), "hamiltonian_spread": _spread(H) / parts if parts > 0
            else math.nan, "hamiltonian_mean": hm, "minus_2H_over_leak": -2 * hm / leak,
            "coi_min": float(table["coi"].iloc[i]), "coi_min_p": float(table["p"].iloc[i]),
            "coi_input": float(table["coi_in"].iloc[0]),
            "balance_spread": bal / wn if wn > 0 else math.nan,
            "bottleneck_rank": int(k), "bottleneck_rank_method": method,
            "nonneg_gap_middle": float(mid["nonneg_gap"].max())}
