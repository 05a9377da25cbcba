"""The ``bnstruct`` Typer app and what its commands share: the consoles, the table of a
DataFrame, number formatting and the executor options."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import Enum

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "out", "err", "terminal_width", "PIPE_WIDTH", "Fmt", "df_table", "df_tables",
           "print_df", "num", "grid_opt", "make_executor",
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
#: the width of piped output when neither COLUMNS nor a terminal says otherwise
PIPE_WIDTH = 100


def terminal_width(stream=None) -> int:
    """The width output to ``stream`` (default stdout) must fit: ``COLUMNS`` when set, else
    the terminal's (stdout's, or stderr's when stdout is piped into a pager or a file), else
    :data:`PIPE_WIDTH`."""
    import os

    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    for f in (stream or sys.stdout, sys.stderr):
        try:
            return os.get_terminal_size(f.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    return PIPE_WIDTH


out = Console(width=terminal_width())
err = Console(stderr=True, width=terminal_width(sys.stderr))


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


def _cell(v: object, floatfmt: str) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "" if v != v else floatfmt.format(v)
    return "" if v is None else str(v)


def df_tables(df, title: str | None = None, *, key: Sequence[str] = (),
              floatfmt: str = "{:.4g}", width: int | None = None) -> list[Table]:
    """``df`` as tables that fit ``width`` (default: the terminal's) without truncating or
    wrapping a cell: the columns are packed left to right into as many tables as needed,
    each repeating the ``key`` columns (e.g. a run's name or the layer) so every row can be
    read across tables. A cell is never cut: a run name stays copyable."""
    from rich import box

    width = width or out.width
    cells = {c: [_cell(v, floatfmt) for v in df[c]] for c in df.columns}
    need = {c: max([len(str(c)), *map(len, cells[c])]) + 2 for c in df.columns}
    keys = [c for c in key if c in df.columns]
    rest = [c for c in df.columns if c not in keys]
    budget = width - sum(need[c] for c in keys)
    chunks: list[list[str]] = []
    for c in rest:
        if chunks and sum(need[x] for x in chunks[-1]) + need[c] <= budget:
            chunks[-1].append(c)
        else:
            chunks.append([c])
    tables = []
    for i, chunk in enumerate(chunks or [[]]):
        t = Table(title=title if i == 0 else None, header_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False, padding=(0, 1), collapse_padding=True,
                  title_justify="left")
        for c in [*keys, *chunk]:
            t.add_column(str(c), justify="right" if df[c].dtype.kind in "fiu" else "left",
                         no_wrap=True, overflow="fold")
        for r in range(len(df)):
            t.add_row(*[cells[c][r] for c in [*keys, *chunk]])
        tables.append(t)
    return tables


def print_df(df, title: str | None = None, *, key: Sequence[str] = (),
             floatfmt: str = "{:.4g}") -> None:
    """Print ``df`` on stdout as :func:`df_tables` (fits the terminal's width)."""
    for t in df_tables(df, title, key=key, floatfmt=floatfmt):
        out.print(t)


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


def make_executor(executor: str, *, address: str | None = None, workers: int | None = None,
                  max_batch: int = 64, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0
                  ) -> object:
    """The library's executor for the CLI's flags (a :class:`~bnstruct.executors.
    LocalExecutor` or :class:`~bnstruct.executors.RayExecutor`); a bad value is named by
    its flag."""
    from ..errors import ConfigError
    from ..executors import LocalExecutor, RayExecutor

    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    if max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {max_batch}")
    if executor == "ray":
        from ..executors._ray import require_ray

        require_ray()
        if cpus_per_task <= 0 or gpus_per_task < 0:
            raise ConfigError(f"--cpus-per-task must be > 0 and --gpus-per-task >= 0, got "
                              f"{cpus_per_task} and {gpus_per_task}")
        return RayExecutor(address, cpus_per_task, gpus_per_task, max_batch)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    return LocalExecutor(workers=workers, max_batch=max_batch)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
