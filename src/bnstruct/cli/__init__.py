"""The ``bnstruct`` command line: one module per command, each a thin layer over a library
function.

Every user error (a :class:`~bnstruct.errors.BnstructError`) is printed as one line on stderr
with exit code 2 and no traceback; nothing is written for rejected input.
"""

from __future__ import annotations

from ..errors import BnstructError
from . import analyze, bench, history, regime, reproduce, runs, sweep, train
from ._app import app, err
from .tables import analysis_table, general_tables

__all__ = ["app", "main", "as_flags", "analysis_table", "general_tables"]

# the commands, in the order of `bnstruct --help`
app.command()(train.train)
app.command("sweep")(sweep.sweep_cmd)
app.command("regime")(regime.regime_cmd)
app.command("runs")(runs.runs_cmd)
app.command("fit-depth")(runs.fit_depth_cmd)
app.command("analyze")(analyze.analyze_cmd)
app.command("plot-history")(history.plot_history_cmd)
app.add_typer(bench.bench_app, name="bench")
app.command("reproduce")(reproduce.reproduce_cmd)


#: library parameter names as the CLI's flags (a library error names the API; the CLI maps it)
FLAGS = {"n_train": "--n-train", "n_test": "--n-test", "d_in": "--d-in", "d_out": "--d-out",
         "data_seed": "--data-seed", "width": "--width", "depth": "--depth", "seed": "--seed",
         "lr": "--lr", "lam": "--lam", "steps": "--steps", "batch_size": "--stage's BATCH",
         "log_every": "--log-every", "checkpoint_every": "--checkpoint-every",
         "device": "--device", "dtype": "--dtype", "workers": "--workers",
         "max_batch": "--max-batch", "lams": "--lam",
         "resume=True, CLI --resume": "--resume",
         "wait=True, CLI --wait": "--wait", "device='cpu'": "--device cpu"}


def as_flags(message: str) -> str:
    """A library error's message with the parameter it starts with (``n_train must be``)
    and API spellings (``resume=True, CLI --resume``) put as the CLI's flags."""
    import re

    for api, flag in FLAGS.items():
        if "=" in api:
            message = message.replace(api, flag)
    m = re.match(r"^(\w+) (must|needs) ", message)
    if m and m.group(1) in FLAGS:
        message = FLAGS[m.group(1)] + message[len(m.group(1)):]
    return message


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turning user errors into one line and exit code 2.

    Usage errors (unknown option, bad type) are typer's own, also exit code 2."""
    try:
        app(args=argv, prog_name="bnstruct")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BnstructError as e:
        err.print(f"error: {as_flags(str(e))}", highlight=False, markup=False, emoji=False,
                  soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0
