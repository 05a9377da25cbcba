"""The ``bnstruct`` Typer app and what its commands share: the consoles, the table of a
DataFrame, number formatting and the executor options."""

from __future__ import annotations

import sys
from enum import Enum

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "out", "err", "Fmt", "df_table", "num", "grid_opt", "ray_line",
           "torch_threads", "EXECUTOR", "ADDRESS", "CPUS", "GPUS"]


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        out.print(f"bnstruct {__version__}", highlight=False)
        raise typer.Exit(0)


app = typer.Typer(
    name="bnstruct",
    help="Bottleneck structure in deep L2-regularized networks: train, diagnose, reproduce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console() if sys.stdout.isatty() else Console(width=240)
err = Console(stderr=True)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="print the version and exit")) -> None:
    """Bottleneck structure in deep L2-regularized networks: train, diagnose, reproduce."""


class Fmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def df_table(df, title: str | None = None, floatfmt: str = "{:.4g}") -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in df.columns:
        t.add_column(str(c), justify="right" if df[c].dtype.kind in "fiu" else "left")
    for _, row in df.iterrows():
        t.add_row(*[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row])
    return t


def num(v: object, spec: str) -> str:
    """``v`` formatted with ``spec``; ``None`` (a non-finite value in strict JSON) as nan."""
    return format(float("nan") if v is None else v, spec)


def grid_opt(help_text: str) -> object:
    return typer.Option(help=help_text + " (one value, a comma list, or lo-hi for integers)")


EXECUTOR = typer.Option(help="local (worker processes) | ray (Ray tasks; see --address)")
ADDRESS = typer.Option(help="Ray cluster to join: auto | ray://HOST:10001 | HOST:6379 "
                             "(default: start a local Ray instance)")
CPUS = typer.Option(help="CPUs per Ray task (one task = one batch)")
GPUS = typer.Option(help="GPUs per Ray task (fractional: 0.25 = four tasks per GPU)")


def ray_line(executor: str, address: str | None) -> str:
    return (" as Ray tasks" + (f" on {address}" if address else " on a local Ray instance")
            if executor == "ray" else "")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
