"""``bnstruct regime``: the regime map over depth x penalty lam (docs/theory.md#regime-map)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import ADDRESS, CPUS, EXECUTOR, GPUS, err, grid_opt, make_executor, out, print_df


def regime_cmd(
    mode: Annotated[str | None, typer.Option(
        help="start from reproduce's grid of this mode (smoke | quick | full); the flags "
             "below override it")] = None,
    task: Annotated[str, typer.Option(help="task name (its bottleneck rank is --k)")
                    ] = "composite",
    k: Annotated[int | None, typer.Option(help="bottleneck rank of the task")] = None,
    n_train: Annotated[int | None, typer.Option(help="training points")] = None,
    depth: Annotated[str | None, grid_opt("depths L (>= 2)")] = None,
    lam: Annotated[str | None, typer.Option(
        help="penalties lam (comma list; one fixed lam per column)")] = None,
    width: Annotated[int | None, typer.Option(help="hidden width")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate of the recipe")] = None,
    steps: Annotated[int | None, typer.Option(help="recipe steps at the smallest depth")
                     ] = None,
    steps_per_layer: Annotated[int | None, typer.Option(
        help="extra steps per layer beyond the smallest depth")] = None,
    seed: Annotated[str | None, grid_opt("seeds per cell")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="store directory")] = Path("runs"),
    figure: Annotated[Path | None, typer.Option(help="write the map's figure (PNG)")] = None,
    csv: Annotated[Path | None, typer.Option(help="write the per-net table (CSV)")] = None,
    protocol: Annotated[float | None, typer.Option(
        help="mark this lam as the protocol in the figure")] = None,
    workers: Annotated[int | None, typer.Option(help="parallel workers (default: one per free "
                                                     "core)")] = None,
    executor: Annotated[str, EXECUTOR] = "local",
    address: Annotated[str | None, ADDRESS] = None,
    cpus_per_task: Annotated[float, CPUS] = 1.0,
    gpus_per_task: Annotated[float, GPUS] = 0.0,
) -> None:
    """Train a depth x lam grid of ReLU MLPs (the depth sweep's recipe, one fixed lam per
    column) and print, per cell, the seeds that kept the task's rank, the share of layers on
    the weight structure and ||theta||^2 / (kL), with the collapse boundary per depth.

    Example: bnstruct regime --mode quick --depth 8,20 --lam 0.0025,0.01,0.04 --out runs
    --figure regime.png"""
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..errors import ConfigError
    from ..experiments import get_config
    from ..experiments._sweep import SweepConfig
    from ..regime import RegimeGrid, regime_map
    from ..store import check_writable
    from ..sweep import parse_values

    base = get_config("regime-map", mode) if mode is not None else None
    sw: SweepConfig = base.sweep if base is not None else SweepConfig()
    kw = dict(sw.task_kwargs)
    if k is not None:
        kw["k"] = k
    if n_train is not None:
        kw["n_train"] = n_train
    change: dict[str, object] = {"task": task, "task_kwargs": tuple(sorted(kw.items()))}
    for name, v in (("width", width), ("lr", lr), ("steps", steps),
                    ("steps_per_layer", steps_per_layer)):
        if v is not None:
            change[name] = v
    if seed is not None:
        change["seeds"] = tuple(parse_values("seed", seed))
    depths = tuple(parse_values("depth", depth)) if depth is not None else (
        base.depths if base is not None and base.depths else sw.depths)
    change["depths"] = depths
    if lam is not None:
        try:
            lds = tuple(float(v) for v in lam.split(","))
        except ValueError:
            raise ConfigError(f"--lam: {lam!r} is not a comma list of numbers") from None
    elif base is not None:
        lds = tuple(base.lams)
    else:
        raise ConfigError("give --lam (e.g. 0.0025,0.01,0.04) or --mode")
    grid = RegimeGrid(dataclasses.replace(sw, **change), lds)  # type: ignore[arg-type]
    ex = make_executor(executor, address=address, workers=workers,
                       cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    check_writable(out_dir)
    err.print(f"regime map: {grid.describe()}; {len(grid.plan())} nets", highlight=False)
    bar = Progress(TextColumn("[bold]regime"), BarColumn(), MofNCompleteColumn(),
                   console=err, disable=not err.is_terminal, transient=True)
    with bar:
        tid = bar.add_task("regime", total=len(grid.plan()))
        m = regime_map(grid, out_dir, executor=ex, progress=lambda c: bar.advance(tid))
    cols = ["depth", "lam", "lam_depth", "n", "found_k", "n_structured", "n_unstructured",
            "n_lower_rank", "n_no_fit", "n_higher_rank", "learned_rank", "on_fraction",
            "norm2_kL", "rel_fit", "regime"]
    print_df(m.cells[cols], title=f"regime map (k = {grid.k})", key=["depth", "lam"])
    print_df(m.boundary, title="collapse boundary (smallest lam losing rank k)",
             key=["depth"])
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        m.nets.to_csv(csv, index=False)
        out.print(f"per-net table: {csv}", highlight=False)
    if figure is not None:
        out.print(f"figure: {m.figure(figure, protocol=protocol)}", highlight=False)
