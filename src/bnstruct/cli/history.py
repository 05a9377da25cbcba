"""``bnstruct plot-history``: training curves of runs as a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ._app import out


def plot_history_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories (one curve each)",
                                                   show_default=False)],
    plot: Annotated[Path, typer.Option("--out", help="the figure to write (format from the "
                                       "suffix: .png, .pdf, .svg)")] = Path("history.png"),
) -> None:
    """Draw the objective, the relative fit and ||theta||^2 against the step of one or more
    runs, stage boundaries marked (from each run's history.csv)."""
    import pandas as pd

    from ..plots import history_figure
    from .analyze import _check_figure_path

    _check_figure_path(plot)
    histories = {}
    for d in run_dirs:
        f = Path(d) / "history.csv"
        if not f.is_file():
            raise ConfigError(f"{d} is not a run directory (no history.csv)")
        histories[Path(d).name] = pd.read_csv(f)
    try:
        history_figure(histories, plot)
    except OSError as e:
        raise ConfigError(f"cannot write {plot}: {e.strerror or e}") from None
    out.print(f"figure written to {plot} ({len(histories)} run(s))", highlight=False)
