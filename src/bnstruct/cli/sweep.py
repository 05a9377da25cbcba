"""``bnstruct sweep``: a grid of runs trained by the executors, reusing the store's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import ADDRESS, CPUS, EXECUTOR, GPUS, err, grid_opt, make_executor, num, out, print_df


def sweep_cmd(
    spec: Annotated[Path | None, typer.Option(
        help="TOML file of options (train's flag names with underscores; values: a scalar, a "
             "list or a string like '0-4'); flags given here override it")] = None,
    task: Annotated[str | None, grid_opt("task name(s)")] = None,
    data: Annotated[Path | None, typer.Option(help=".npz data file (one; replaces --task)")
                    ] = None,
    model: Annotated[str | None, grid_opt("mlp | linear | leaky-resnet")] = None,
    leak: Annotated[str | None, grid_opt("leaky-resnet: effective depth(s) Lt")] = None,
    adapt_every: Annotated[str | None, grid_opt(
        "leaky-resnet: re-set the layer steps every N steps")] = None,
    k: Annotated[str | None, grid_opt("bottleneck rank of the task")] = None,
    n_train: Annotated[str | None, grid_opt("training points")] = None,
    n_test: Annotated[str | None, grid_opt("test points")] = None,
    d_in: Annotated[str | None, grid_opt("input dimension")] = None,
    d_out: Annotated[str | None, grid_opt("output dimension")] = None,
    data_seed: Annotated[str | None, grid_opt("seed of the task's data")] = None,
    depth: Annotated[str | None, grid_opt("number of weight matrices L")] = None,
    width: Annotated[str | None, grid_opt(
        "hidden width; one network's per-layer list as 32x32x16")] = None,
    lam: Annotated[str | None, grid_opt("penalty weight on ||theta||^2")] = None,
    lr: Annotated[str | None, grid_opt("learning rate")] = None,
    optimizer: Annotated[str | None, grid_opt("adam | gd")] = None,
    steps: Annotated[str | None, grid_opt("total optimizer steps")] = None,
    stage: Annotated[list[str] | None, typer.Option(
        help="explicit stage OPT:LR:LAM:STEPS[:BATCH], repeatable (one stage list for "
             "every run)")] = None,
    seed: Annotated[str | None, grid_opt("seed of the init (and minibatches)")] = None,
    dtype: Annotated[str | None, grid_opt("float32 | float64")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    log_every: Annotated[int | None, typer.Option(help="history row every N steps")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="checkpoint every N steps")
                                ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="store directory")] = Path("runs"),
    workers: Annotated[int | None, typer.Option(
        help="parallel workers: this process and N-1 worker processes (default: one per "
             "free core while there are batches for them)")
                       ] = None,
    max_batch: Annotated[int, typer.Option(help="at most N networks per batch")] = 64,
    dry_run: Annotated[bool, typer.Option(help="list the runs, train nothing")] = False,
    executor: Annotated[str, EXECUTOR] = "local",
    address: Annotated[str | None, ADDRESS] = None,
    cpus_per_task: Annotated[float, CPUS] = 1.0,
    gpus_per_task: Annotated[float, GPUS] = 0.0,
) -> None:
    """Train a grid of runs (batched, in parallel), reusing those the store already has.

    Example: bnstruct sweep --task composite --depth 8,12,16 --width 64 --seed 0-4
    --lam 0.005,0.01 --steps 2000 --out runs"""
    import time

    import pandas as pd
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..errors import ExecutionFailed
    from ..executors import execute, make_plan
    from ..store import check_writable
    from ..sweep import grid, load_spec

    options: dict[str, object] = dict(load_spec(spec)) if spec is not None else {}
    given = {"task": task, "data": str(data) if data is not None else None, "model": model,
             "k": k, "n_train": n_train, "n_test": n_test, "d_in": d_in, "d_out": d_out,
             "data_seed": data_seed, "depth": depth, "width": width, "lam": lam, "lr": lr,
             "optimizer": optimizer, "steps": steps, "stage": stage or None, "seed": seed,
             "dtype": dtype, "device": device, "log_every": log_every,
             "checkpoint_every": checkpoint_every, "leak": leak, "adapt_every": adapt_every}
    options.update({kk: v for kk, v in given.items() if v is not None})
    ex = make_executor(executor, address=address, workers=workers, max_batch=max_batch,
                       cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    points = grid(options)
    configs = [p.config for p in points]
    the_plan = make_plan(configs, out_dir, ex)  # type: ignore[arg-type]
    reused = {c.default_name() for c in the_plan.reused}
    plan = the_plan.describe()
    if dry_run:  # the plan execute() will carry out: its batches, in the order they start
        out.print(plan, highlight=False)
        for i, b in enumerate(the_plan.batches, 1):
            out.print(f"batch {i} ({len(b)} network(s)):", highlight=False)
            for c in b:
                out.print(f"  {c.default_name()}", highlight=False)
        if reused:
            out.print("in the store (reused):", highlight=False)
            for c in the_plan.reused:
                out.print(f"  {c.default_name()}", highlight=False)
        return
    check_writable(out_dir)
    err.print(plan, highlight=False)
    t0 = time.perf_counter()
    bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   console=err, disable=not err.is_terminal, transient=True)
    with bar:
        tid = bar.add_task("sweep", total=len(configs))
        failed: dict[str, str] = {}
        try:
            runs_: list[Any] = execute(the_plan, progress=lambda c: bar.advance(tid))
        except ExecutionFailed as e:  # the others finished: table with the errors
            failed = e.errors
            runs_ = [e.runs.get(c.default_name()) or _FailedRun(c, e.errors[c.default_name()])
                     for c in configs]
    seconds = time.perf_counter() - t0
    varying = [n for n in points[0].values if len({repr(p.values[n]) for p in points}) > 1]
    rows = []
    for p, r in zip(points, runs_, strict=True):
        fin = r.summary["final"]
        what = "reused" if r.path.name in reused else "ran"
        status = r.status if r.status != "diverged" else (
            f"[red]diverged@{r.summary.get('diverged_at')}[/]")
        rows.append({"run": r.path.name, **{n: str(p.values[n]) for n in varying},
                     "status": f"{status} ({what})",
                     "rel_fit": num(fin.get("rel_fit"), ".3e"),
                     "param_norm2": num(fin.get("param_norm2"), ".2f"),
                     "seconds": f"{r.summary['seconds']:.1f}"})
    out.print(f"{len(configs) - len(reused)} ran, {len(reused)} reused, "
              f"{sum(r.status == 'diverged' for r in runs_)} diverged ({seconds:.1f}s) in "
              f"{out_dir}", highlight=False)
    print_df(pd.DataFrame(rows), key=["run"])
    if any(r.status == "interrupted" for r in runs_):
        raise typer.Exit(130)
    if failed:
        err.print(f"{len(failed)} run(s) failed (see the table); the others are in the store",
                  highlight=False)
        raise typer.Exit(1)


class _FailedRun:
    """Stands for a run whose task failed in sweep's final table."""

    def __init__(self, config: object, error: str) -> None:
        from pathlib import PurePath

        self.path = PurePath(config.default_name())  # type: ignore[attr-defined]
        self.status = f"[red]failed: {error}[/]"
        self.summary: dict[str, object] = {"final": {}, "seconds": 0.0}

