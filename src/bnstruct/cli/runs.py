"""``bnstruct runs`` and ``bnstruct fit-depth``: views of a store's index."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ._app import Fmt, out, print_df


def runs_cmd(
    store: Annotated[Path, typer.Argument(help="store directory")] = Path("runs"),
    where: Annotated[str | None, typer.Option(help="SQL WHERE clause, e.g. \"depth > 10\"")
                     ] = None,
    fmt: Annotated[Fmt, typer.Option("--format", help="table | csv | json")] = Fmt.table,
    columns: Annotated[str | None, typer.Option(help="comma list of columns to show")
                       ] = None,
) -> None:
    """List the runs of a store (its SQLite index): full names, the configuration columns
    that differ between the listed runs, the outcome; what they share on one line."""
    from ..store import runs

    df = runs(store, where)
    if columns:
        cols = [c.strip() for c in columns.split(",")]
        bad = [c for c in cols if c not in df.columns]
        if bad:
            raise ConfigError(f"unknown column(s) {bad}; available: {list(df.columns)}")
        df = df[cols]
    if fmt is Fmt.csv:
        sys.stdout.write(df.to_csv(index=False))
    elif fmt is Fmt.json:
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    elif columns:
        print_df(df, title=f"{len(df)} run(s) in {store}", key=["name"] if "name" in df else ())
    else:
        show, common = runs_view(df)
        print_df(show, title=f"{len(df)} run(s) in {store}", key=["name"])
        if common:
            out.print("the same in every run: " + ", ".join(f"{k}={v}" for k, v in common.items()),
                      highlight=False)


#: the configuration columns of the index, in the order ``runs`` shows them
CONFIG_COLUMNS = ("task", "model", "depth", "width", "d_in", "d_out", "n_train", "k",
                  "optimizer", "lr", "lam", "steps", "seed", "dtype")
#: the outcome columns ``runs`` always shows
RESULT_COLUMNS = ("status", "rel_fit", "rel_test_error", "param_norm2", "norm2_per_kL",
                  "seconds")


def runs_view(df):
    """The default table of ``bnstruct runs``: the full run name, the configuration columns
    that differ between the listed runs (lr, optimizer, steps, ...), the outcome; and the
    configuration the runs share (column -> value)."""
    varying = [c for c in CONFIG_COLUMNS if c in df and df[c].astype(str).nunique() > 1]
    common = {c: df[c].iloc[0] for c in CONFIG_COLUMNS
              if c in df and len(df) and c not in varying}
    return df[["name", *varying, *[c for c in RESULT_COLUMNS if c in df]]], common


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
    print_df(show, title=f"depth fits (OLS, ± 1 standard error) in {store}"
                       + (f", slope fixed at k={k:g}" if k is not None else ""))
