"""``bnstruct runs`` and ``bnstruct fit-depth``: views of a store's index."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ._app import Fmt, df_table, out


def runs_cmd(
    store: Annotated[Path, typer.Argument(help="store directory")] = Path("runs"),
    where: Annotated[str | None, typer.Option(help="SQL WHERE clause, e.g. \"depth > 10\"")
                     ] = None,
    fmt: Annotated[Fmt, typer.Option("--format", help="table | csv | json")] = Fmt.table,
    columns: Annotated[str | None, typer.Option(help="comma list of columns to show")
                       ] = None,
) -> None:
    """List the runs of a store (its SQLite index)."""
    from ..store import runs

    df = runs(store, where)
    if columns:
        cols = [c.strip() for c in columns.split(",")]
        bad = [c for c in cols if c not in df.columns]
        if bad:
            raise ConfigError(f"unknown column(s) {bad}; available: {list(df.columns)}")
        df = df[cols]
    elif fmt is Fmt.table:
        df = df[["name", "task", "model", "depth", "width", "lam", "status", "rel_fit",
                 "rel_test_error", "param_norm2", "norm2_per_kL", "seconds"]]
    if fmt is Fmt.csv:
        sys.stdout.write(df.to_csv(index=False))
    elif fmt is Fmt.json:
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    else:
        out.print(df_table(df, title=f"{len(df)} run(s) in {store}"))


def fit_depth_cmd(
    store: Annotated[Path, typer.Argument(help="store directory")] = Path("runs"),
    where: Annotated[str | None, typer.Option(help="SQL WHERE clause, e.g. \"task = 'composite'\"")
                     ] = None,
    k: Annotated[float | None, typer.Option(
        help="fix the slope R0 at K (e.g. the known rank) and fit only R1")] = None,
    order: Annotated[int, typer.Option(help="1: norm2 = R0 L + R1;  2: adds R2 / L")] = 1,
    fmt: Annotated[Fmt, typer.Option("--format", help="table | csv | json")] = Fmt.table,
) -> None:
    """Fit ||theta||^2 = R0 L + R1 across depths, per task/model/width/lam (completed runs)."""
    from ..depthfit import fit_depth_runs

    df = fit_depth_runs(store, where=where, k=k, order=order)
    if fmt is Fmt.csv:
        sys.stdout.write(df.to_csv(index=False))
        return
    if fmt is Fmt.json:
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
        return
    show = df.copy()
    for c in ("R0", "R1", "R2"):
        if c in show.columns:
            show[c] = [f"{v:.4g} ± {e:.2g}" for v, e in zip(show[c], show[f"{c}_err"],
                                                           strict=True)]
            show = show.drop(columns=f"{c}_err")
    show = show.drop(columns=["task_options", "sigma"])
    out.print(df_table(show, title=f"depth fits (OLS, ± 1 standard error) in {store}"
                                    + (f", slope fixed at k={k:g}" if k is not None else "")))
