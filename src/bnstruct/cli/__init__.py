"""The ``bnstruct`` command line: one module per command, each a thin layer over a library
function.

Every user error (a :class:`~bnstruct.errors.BnstructError`) is printed as one line on stderr
with exit code 2 and no traceback; nothing is written for rejected input.
"""

from __future__ import annotations

from ..errors import BnstructError
from . import analyze, bench, history, reproduce, runs, sweep, train
from ._app import app, err
from .tables import analysis_table, general_tables

__all__ = ["app", "main", "analysis_table", "general_tables"]

# the commands, in the order of `bnstruct --help`
app.command()(train.train)
app.command("sweep")(sweep.sweep_cmd)
app.command("runs")(runs.runs_cmd)
app.command("fit-depth")(runs.fit_depth_cmd)
app.command("analyze")(analyze.analyze_cmd)
app.command("plot-history")(history.plot_history_cmd)
app.add_typer(bench.bench_app, name="bench")
app.command("reproduce")(reproduce.reproduce_cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turning user errors into one line and exit code 2.

    Usage errors (unknown option, bad type) are typer's own, also exit code 2."""
    try:
        app(args=argv, prog_name="bnstruct")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BnstructError as e:
        err.print(f"error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0
