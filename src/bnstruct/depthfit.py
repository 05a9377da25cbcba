"""Fit :math:`\\|\theta\\|^2 = R_0 L + R_1` across depths for every group of runs in a store
(``bnstruct fit-depth``). The fit itself is :func:`bnstruct.theory.fit_depth` (pure); this
module is its bridge to the run store, kept out of :mod:`bnstruct.theory` so that the closed
forms import no I/O."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .theory import fit_depth

__all__ = ["fit_depth_runs"]


def _task_key(row: pd.Series) -> str:
    cj = row.get("config_json")
    if isinstance(cj, str) and cj:
        try:
            return json.dumps(json.loads(cj)["task"], sort_keys=True)
        except (ValueError, KeyError, TypeError):
            pass
    return json.dumps({"name": row.get("task"), "k": _plain(row.get("k")),
                       "d_in": _plain(row.get("d_in")), "d_out": _plain(row.get("d_out")),
                       "n_train": _plain(row.get("n_train"))}, sort_keys=True)


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def fit_depth_runs(store: str | Path | pd.DataFrame, *, where: str | None = None,
                   k: float | None = None, order: int = 1, status: str = "completed"
                   ) -> pd.DataFrame:
    r"""Fit :func:`fit_depth` to every group of runs of one task across depths.

    Runs are grouped by task (builder name and all its options, from the run's config), model,
    width, and the final stage's optimizer, ``lr`` and ``lam`` (runs trained differently are
    never fitted together; a sweep whose lr scales with depth, such as ``lr = c/L``, gives one
    group per run, each reported as skipped); only runs with ``status`` are used. ``store`` is a
    store directory (filtered with the SQL ``where`` clause, see :func:`bnstruct.runs`) or a
    DataFrame from :func:`bnstruct.runs`.

    Returns one row per group: ``task``, ``task_options``, ``model``, ``width``,
    ``optimizer``, ``lr``, ``lam``,
    ``k_task`` (known bottleneck rank of the task, if any), ``depths``, ``n_runs``, ``R0``,
    ``R0_err``, ``R1``, ``R1_err`` (``R2``, ``R2_err`` for ``order=2``), ``dof``, ``sigma``,
    ``note``. A group with too few depths is kept with ``NaN`` estimates and a note saying so
    (never silently dropped). If no group can be fitted, :class:`~bnstruct.errors.DataError`.
    """
    if isinstance(store, pd.DataFrame):
        df = store
        if where is not None:
            raise ConfigError("where applies to a store path; filter the DataFrame instead")
    else:
        from .store import runs

        df = runs(store, where)
    need = {"task", "depth", "param_norm2"}
    missing = need - set(df.columns)
    if missing:
        raise DataError(f"runs table lacks column(s) {sorted(missing)}: pass bnstruct.runs(...)")
    if "status" in df.columns:
        df = df[df["status"] == status]
    df = df[np.isfinite(pd.to_numeric(df["param_norm2"], errors="coerce"))]
    if df.empty:
        raise DataError(f"no {status} runs with a finite param_norm2 to fit"
                        + (f" (where {where!r})" if where else ""))
    df = df.copy()
    df["_task_key"] = [_task_key(r) for _, r in df.iterrows()]
    keys = ["_task_key"] + [c for c in ("model", "width", "optimizer", "lr", "lam")
                            if c in df.columns]
    rows: list[dict[str, Any]] = []
    for gkey, g in df.groupby(keys, sort=True, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        info = dict(zip(keys, gkey, strict=True))
        task = json.loads(info.pop("_task_key"))
        opts = task.get("kwargs", {k_: v for k_, v in task.items() if k_ != "name"})
        row: dict[str, Any] = {"task": task.get("name"),
                               "task_options": json.dumps(opts, sort_keys=True), **info}
        kt = g["k"].dropna().unique() if "k" in g.columns else []
        row["k_task"] = int(kt[0]) if len(kt) == 1 else None
        ds = sorted(set(int(d) for d in g["depth"]))
        row["depths"] = ",".join(map(str, ds))
        row["n_runs"] = len(g)
        try:
            fit = fit_depth(g["depth"].to_numpy(float), g["param_norm2"].to_numpy(float),
                            k=k, order=order)
        except DataError as e:
            row.update({"R0": math.nan, "R0_err": math.nan, "R1": math.nan,
                        "R1_err": math.nan, "dof": 0, "sigma": math.nan,
                        "note": f"skipped: {e}"})
            if order == 2:
                row.update({"R2": math.nan, "R2_err": math.nan})
        else:
            row.update({"R0": fit.R0, "R0_err": fit.R0_err, "R1": fit.R1,
                        "R1_err": fit.R1_err})
            if order == 2:
                row.update({"R2": fit.R2, "R2_err": fit.R2_err})
            row.update({"dof": fit.dof, "sigma": fit.sigma,
                        "note": "" if fit.dof > 0 else "no residual dof: errors undefined"})
        rows.append(row)
    out = pd.DataFrame(rows)
    if out["note"].str.startswith("skipped").all():
        groups = "; ".join(f"{r['task']} {r['model'] if 'model' in r else ''} depths "
                           f"[{r['depths']}]" for r in rows)
        raise DataError(f"no group of runs spans enough distinct depths to fit "
                        f"(need >= {1 + order}): {groups}")
    return out
