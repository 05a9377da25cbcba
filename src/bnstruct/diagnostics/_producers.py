r"""The column producers of :func:`~bnstruct.analyze`: one list for every model.

A producer is a function of one :class:`Context` (the evaluation, its spectra as NumPy
arrays, the skipped layers and the ``k`` in use) returning some columns of the per-layer
table. :data:`PRODUCERS` lists them in column order; the *spectral* producers run for every
model, the *theory* producers (``needs_chain``) only when the traced model is a positively
homogeneous chain; elsewhere their columns hold ``fill`` (null, with the reason in
``summary["theory"]``). :func:`layer_table` runs the list; :func:`representation_table` is
the per-representation table of a model that is not a chain (its representations are not
one per weight layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..conventions import (
    TOP_SINGULAR_VALUES,
    center,
    clear_gap,
    count_near_one,
    effective_rank,
    energy_rank,
    gap_rank,
    middle_layers,
    numerical_rank,
)
from ._evaluation import Evaluation, svdvals

__all__ = ["Context", "Producer", "PRODUCERS", "LAYER_COLUMNS", "THEORY_COLUMNS",
           "REP_COLUMNS", "layer_table", "representation_table", "longest_run"]

_TOP = TOP_SINGULAR_VALUES
_ERANKS = ("entropy", "participation", "threshold")

LAYER_COLUMNS = (
    ["layer", "name", "n_out", "n_in", "skipped", "frob2", "bias2"]
    + [f"s{i}" for i in range(1, _TOP + 1)]
    + ["near_one", "s_k1", "gap_rank", "gap_ratio", "clear_gap_at_k", "stable_rank",
       "w_erank_entropy", "w_erank_participation", "w_erank_threshold",
       "rep_width", "rep_erank_entropy", "rep_erank_participation", "rep_erank_threshold",
       "rep_rank_numerical", "rep_energy_rank", "balance", "middle", "in_bottleneck"]
)
#: per-layer columns that need a positively homogeneous chain (null for other models)
THEORY_COLUMNS = ("near_one", "s_k1", "clear_gap_at_k", "balance", "in_bottleneck")
#: the representation table of general models: ``rep_*`` on the flattened ``[N, prod(shape)]``
#: view, ``chan_*`` on the per-channel ``[N * spatial, C]`` view of feature maps (NaN for
#: vectors), ``jac_rank`` the max over points of the numerical rank of ``d h_l / d x``
REP_COLUMNS = ["rep", "name", "shape", "rep_width", "rep_erank_entropy",
               "rep_erank_participation", "rep_erank_threshold", "rep_rank_numerical",
               "rep_energy_rank", "chan_width", "chan_erank_participation",
               "chan_rank_numerical", "chan_energy_rank", "jac_rank", "in_bottleneck"]

Columns = dict[str, list[Any]]


@dataclass(frozen=True, eq=False)
class Context:
    """What every producer reads: the evaluation, the singular values of each weight matrix
    (``w``) and of each centered representation (``r``), NumPy, computed once; why a layer
    is skipped (``""``: it is not) and the ``k`` in use."""

    ev: Evaluation
    w: list[np.ndarray]
    r: list[np.ndarray]
    skipped: list[str]
    k: int

    @property
    def depth(self) -> int:
        return len(self.w)

    def per_layer(self, f: Callable[[np.ndarray], float]) -> list[float]:
        """``f(s)`` of each weight spectrum, NaN for skipped layers."""
        return [f(s) if not sk else math.nan for s, sk in zip(self.w, self.skipped, strict=True)]


@dataclass(frozen=True)
class Producer:
    """Some columns of the per-layer table: ``produce(context)``; with ``needs_chain`` only
    for chains, ``fill`` in those columns otherwise."""

    columns: tuple[str, ...]
    produce: Callable[[Context], Columns]
    needs_chain: bool = False
    fill: Any = None


def _identity(c: Context) -> Columns:
    ev = c.ev
    return {"layer": list(range(1, c.depth + 1)), "name": list(ev.weight_names),
            "n_out": [W.shape[0] for W in ev.weights], "n_in": [W.shape[1] for W in ev.weights],
            "skipped": list(c.skipped),
            "frob2": [float(W.pow(2).sum()) for W in ev.weights],
            "bias2": [float(b.pow(2).sum()) if b is not None else 0.0 for b in ev.biases]}


def _spectra(c: Context) -> Columns:
    cols: Columns = {f"s{i + 1}": [float(s[i]) if i < len(s) else math.nan for s in c.w]
                     for i in range(_TOP)}
    gaps = [gap_rank(s) if not sk else (math.nan, math.nan)
            for s, sk in zip(c.w, c.skipped, strict=True)]
    cols["gap_rank"] = [float(g) for g, _ in gaps]
    cols["gap_ratio"] = [float(r) for _, r in gaps]
    cols["stable_rank"] = c.per_layer(lambda s: float((s ** 2).sum() / s[0] ** 2))
    for m in _ERANKS:
        cols[f"w_erank_{m}"] = c.per_layer(partial(_erank, method=m))
    return cols


def _erank(s: np.ndarray, method: str) -> float:
    return effective_rank(s, method)


def _middle(c: Context) -> Columns:
    mids = set(middle_layers(c.depth)) if c.depth else set()
    return {"middle": [l in mids for l in range(1, c.depth + 1)]}


def _near_one(c: Context) -> Columns:
    return {"near_one": [count_near_one(s) for s in c.w]}


def _at_k(c: Context) -> Columns:
    """The ``k``-dependent columns: ``s_{k+1}``, a clear gap at ``k``, in the bottleneck."""
    gap = [clear_gap(s, c.k) for s in c.w]
    return {"s_k1": [float(s[c.k]) if c.k < len(s) else math.nan for s in c.w],
            "clear_gap_at_k": gap,
            "in_bottleneck": [g and not sk for g, sk in zip(gap, c.skipped, strict=True)]}


def _representations(c: Context) -> Columns:
    N = c.ev.n_points
    eps_model = torch.finfo(c.ev.model_dtype).eps
    widths = [A.shape[1] for A in c.ev.representations()]
    cols: Columns = {"rep_width": widths}
    for m in _ERANKS:
        cols[f"rep_erank_{m}"] = [effective_rank(r, m) for r in c.r]
    cols["rep_rank_numerical"] = [numerical_rank(r, (N, n), eps_model)
                                  for r, n in zip(c.r, widths, strict=True)]
    cols["rep_energy_rank"] = [energy_rank(r) for r in c.r]
    return cols


def _balance(c: Context) -> Columns:
    bal = c.ev.balance.cpu().numpy()
    return {"balance": [float(bal[l]) if l < c.depth - 1 else math.nan
                        for l in range(c.depth)]}


_REP = ("rep_width", "rep_erank_entropy", "rep_erank_participation", "rep_erank_threshold",
        "rep_rank_numerical", "rep_energy_rank")

#: every per-layer column, spectral producers for every model, theory producers for chains
PRODUCERS: tuple[Producer, ...] = (
    Producer(("layer", "name", "n_out", "n_in", "skipped", "frob2", "bias2"), _identity),
    Producer((*(f"s{i}" for i in range(1, _TOP + 1)), "gap_rank", "gap_ratio", "stable_rank",
              *(f"w_erank_{m}" for m in _ERANKS)), _spectra),
    Producer(("middle",), _middle),
    Producer(("near_one",), _near_one, needs_chain=True),
    Producer(("s_k1", "clear_gap_at_k", "in_bottleneck"), _at_k, needs_chain=True),
    # a chain's representations are one per layer (a_l, then f(x)); other models have their
    # own table (representation_table)
    Producer(_REP, _representations, needs_chain=True, fill=math.nan),
    Producer(("balance",), _balance, needs_chain=True),
)


def layer_table(c: Context) -> pd.DataFrame:
    """One row per weight layer, columns :data:`LAYER_COLUMNS`, from :data:`PRODUCERS`."""
    cols: Columns = {}
    for p in PRODUCERS:
        if p.needs_chain and not c.ev.is_chain:
            cols.update({name: [p.fill] * c.depth for name in p.columns})
        else:
            cols.update(p.produce(c))
    return pd.DataFrame(cols, columns=LAYER_COLUMNS)


def _channel_view(A: torch.Tensor, eps_model: float) -> dict[str, Any]:
    """``chan_*`` of a feature map ``[N, C, *spatial]`` (its ``[N * spatial, C]`` view)."""
    if A.dim() <= 2:
        return dict(chan_width=math.nan, chan_erank_participation=math.nan,
                    chan_rank_numerical=math.nan, chan_energy_rank=math.nan)
    N, C = A.shape[0], A.shape[1]
    ch = A.reshape(N, C, -1).transpose(1, 2).reshape(-1, C)
    sc = svdvals(center(ch)).cpu().numpy()
    return dict(chan_width=C, chan_erank_participation=effective_rank(sc, "participation"),
                chan_rank_numerical=numerical_rank(sc, tuple(ch.shape), eps_model),
                chan_energy_rank=energy_rank(sc))


def representation_table(c: Context, jacobian_points: int) -> pd.DataFrame:
    """One row per representation of a model that is not a chain (:data:`REP_COLUMNS`);
    ``in_bottleneck``: a hidden representation approximately ``k``-dimensional
    (``rep_energy_rank <= k``)."""
    ev = c.ev
    eps_model = torch.finfo(ev.model_dtype).eps
    jr = ev.layer_jacobian_ranks(jacobian_points)
    rows = []
    n_hidden = max(len(ev.rep_names) - 1, 1)
    for i, (name, A) in enumerate(zip(ev.rep_names, ev.representations(), strict=True)):
        flat, s = A.reshape(A.shape[0], -1), c.r[i]
        row: dict[str, Any] = {"rep": i + 1, "name": name, "shape": list(A.shape[1:]),
                               "rep_width": flat.shape[1]}
        for m in _ERANKS:
            row[f"rep_erank_{m}"] = effective_rank(s, m)
        row["rep_rank_numerical"] = numerical_rank(s, tuple(flat.shape), eps_model)
        row["rep_energy_rank"] = energy_rank(s)
        row.update(_channel_view(A, eps_model))
        row["jac_rank"] = int(jr[i])
        row["in_bottleneck"] = bool(i < n_hidden and row["rep_energy_rank"] <= c.k)
        rows.append(row)
    return pd.DataFrame(rows, columns=REP_COLUMNS)


def longest_run(flags: list[bool]) -> tuple[int, int] | None:
    """1-based ``(first, last)`` of the longest run of True (the first one on ties)."""
    best, start = None, None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if best is None or i - start > best[1] - best[0] + 1:
                best = (start, i - 1)
            start = None
    return None if best is None else (best[0] + 1, best[1] + 1)
