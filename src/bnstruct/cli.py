"""The ``bnstruct`` command line.

Every user error (a :class:`~bnstruct.errors.BnstructError`) is printed as one line on stderr
with exit code 2 and no traceback; nothing is written for rejected input.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .errors import BnstructError, ConfigError

app = typer.Typer(
    name="bnstruct",
    help="Bottleneck structure in deep L2-regularized networks: train, diagnose, reproduce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console() if sys.stdout.isatty() else Console(width=240)
err = Console(stderr=True)


class Fmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _df_table(df, title: str | None = None, floatfmt: str = "{:.4g}") -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in df.columns:
        t.add_column(str(c), justify="right" if df[c].dtype.kind in "fiu" else "left")
    for _, row in df.iterrows():
        t.add_row(*[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row])
    return t


def _parse_width(text: str) -> int | tuple[int, ...]:
    try:
        ws = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ConfigError(f"--width {text!r} must be an integer or a comma list of integers"
                          ) from None
    return ws[0] if len(ws) == 1 else ws


@app.command()
def train(
    task: Annotated[str, typer.Option(help="composite | teacher | symmetry | linear | digits")
                    ] = "composite",
    data: Annotated[Path | None, typer.Option(
        help=".npz with arrays X, Y (optional X_test, Y_test); replaces --task")] = None,
    model: Annotated[str, typer.Option(help="mlp (ReLU) or linear (deep linear)")] = "mlp",
    k: Annotated[int | None, typer.Option(help="bottleneck rank of the task")] = None,
    n_train: Annotated[int | None, typer.Option(help="training points")] = None,
    n_test: Annotated[int | None, typer.Option(help="test points")] = None,
    d_in: Annotated[int | None, typer.Option(help="input dimension (tasks that have one)")
                    ] = None,
    d_out: Annotated[int | None, typer.Option(help="output dimension (tasks that have one)")
                     ] = None,
    data_seed: Annotated[int, typer.Option(help="seed of the task's data")] = 0,
    depth: Annotated[int, typer.Option(help="number of weight matrices L")] = 12,
    width: Annotated[str, typer.Option(help="hidden width, or a comma list of L-1 widths")
                     ] = "64",
    lam: Annotated[float, typer.Option(
        help="penalty weight on ||theta||^2 (PyTorch weight_decay = 2*lam)")] = 0.005,
    lr: Annotated[float | None, typer.Option(
        help="learning rate (adam default 1.5e-3, gd default 0.05)")] = None,
    optimizer: Annotated[str, typer.Option(
        help="adam: 3-stage penalty warm-up recipe; gd: one full-batch GD stage")] = "adam",
    steps: Annotated[int, typer.Option(help="total optimizer steps")] = 6000,
    stage: Annotated[list[str] | None, typer.Option(
        help="explicit stage OPT:LR:LAM:STEPS[:BATCH], repeatable; overrides "
             "--optimizer/--lr/--lam/--steps")] = None,
    seed: Annotated[int, typer.Option(help="seed of the init (and minibatches)")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 | float64")] = "float32",
    out_dir: Annotated[Path, typer.Option("--out", help="store directory")] = Path("runs"),
    name: Annotated[str | None, typer.Option(help="run name (default from the config)")
                    ] = None,
    resume: Annotated[bool, typer.Option(help="continue or reuse an existing run")] = False,
    log_every: Annotated[int, typer.Option(help="history row every N steps")] = 100,
    checkpoint_every: Annotated[int, typer.Option(help="checkpoint every N steps")] = 1000,
    quiet: Annotated[bool, typer.Option(help="no progress bar; print one line")] = False,
    wait: Annotated[bool, typer.Option(
        help="if another process is training this run, wait for it (default: error)")
                    ] = False,
) -> None:
    """Train one L2-regularized network and store it as a run directory."""
    from .store import run
    from .sweep import config_from

    cfg, the_task = config_from(
        task=task, data=data, model=model, k=k, n_train=n_train, n_test=n_test, d_in=d_in,
        d_out=d_out, data_seed=data_seed, depth=depth, width=_parse_width(width), lam=lam,
        lr=lr, optimizer=optimizer, steps=steps, stage=stage, seed=seed, device=device,
        dtype=dtype, log_every=log_every, checkpoint_every=checkpoint_every)
    if data is None:
        cfg.task.build()  # a task option its builder rejects fails before anything is written
    r = run(cfg, out_dir, name=name, resume=resume, progress=False if quiet else None,
            task=the_task, wait=wait)
    out.print(_run_line(r), highlight=False, soft_wrap=True)
    if r.status == "interrupted":
        err.print(f"interrupted at step {r.summary['step']}: continue with the same command "
                  "and --resume", highlight=False)
        raise typer.Exit(130)


def _num(v: object, spec: str) -> str:
    """``v`` formatted with ``spec``; ``None`` (a non-finite value in strict JSON) as nan."""
    return format(float("nan") if v is None else v, spec)


def _run_line(r) -> str:
    """One line describing a finished (or interrupted) run."""
    fin = r.summary["final"]
    line = (f"{r.status}: {r.path}  steps {r.summary['step']}  "
            f"rel_fit {_num(fin.get('rel_fit'), '.3e')}  "
            f"param_norm2 {_num(fin.get('param_norm2'), '.2f')}  "
            f"rel_test {_num(fin.get('rel_test_error'), '.3e')}  "
            f"{r.summary['seconds']:.1f}s")
    n2, k = fin.get("param_norm2"), r.summary.get("bn_rank")
    if k and n2 is not None:
        line += f"  param_norm2/(kL) {n2 / (k * r.config.model.depth):.2f}"
    return line


def _pca_color(task, n: int):
    """A per-point quantity of the task to colour the bottleneck PCA with, when it has one."""
    for key, col, label in (("Z", 0, "latent $z_1$"), ("invariants", 0, "invariant $r$"),
                            ("labels", None, "class")):
        v = task.meta.get(key)
        if v is not None and len(v) >= n:
            return (v[:n, col] if col is not None else v[:n]), label
    return None, ""


def _grid_opt(help_text: str) -> object:
    return typer.Option(help=help_text + " (one value, a comma list, or lo-hi for integers)")


_EXECUTOR = typer.Option(help="local (worker processes) | ray (Ray tasks; see --address)")
_ADDRESS = typer.Option(help="Ray cluster to join: auto | ray://HOST:10001 | HOST:6379 "
                             "(default: start a local Ray instance)")
_CPUS = typer.Option(help="CPUs per Ray task (one task = one batch)")
_GPUS = typer.Option(help="GPUs per Ray task (fractional: 0.25 = four tasks per GPU)")


def _ray_line(executor: str, address: str | None) -> str:
    return (" as Ray tasks" + (f" on {address}" if address else " on a local Ray instance")
            if executor == "ray" else "")


@app.command("sweep")
def sweep_cmd(
    spec: Annotated[Path | None, typer.Option(
        help="TOML file of options (train's flag names with underscores; values: a scalar, a "
             "list or a string like '0-4'); flags given here override it")] = None,
    task: Annotated[str | None, _grid_opt("task name(s)")] = None,
    data: Annotated[Path | None, typer.Option(help=".npz data file (one; replaces --task)")
                    ] = None,
    model: Annotated[str | None, _grid_opt("mlp | linear")] = None,
    k: Annotated[str | None, _grid_opt("bottleneck rank of the task")] = None,
    n_train: Annotated[str | None, _grid_opt("training points")] = None,
    n_test: Annotated[str | None, _grid_opt("test points")] = None,
    d_in: Annotated[str | None, _grid_opt("input dimension")] = None,
    d_out: Annotated[str | None, _grid_opt("output dimension")] = None,
    data_seed: Annotated[str | None, _grid_opt("seed of the task's data")] = None,
    depth: Annotated[str | None, _grid_opt("number of weight matrices L")] = None,
    width: Annotated[str | None, _grid_opt(
        "hidden width; one network's per-layer list as 32x32x16")] = None,
    lam: Annotated[str | None, _grid_opt("penalty weight on ||theta||^2")] = None,
    lr: Annotated[str | None, _grid_opt("learning rate")] = None,
    optimizer: Annotated[str | None, _grid_opt("adam | gd")] = None,
    steps: Annotated[str | None, _grid_opt("total optimizer steps")] = None,
    stage: Annotated[list[str] | None, typer.Option(
        help="explicit stage OPT:LR:LAM:STEPS[:BATCH], repeatable (one stage list for "
             "every run)")] = None,
    seed: Annotated[str | None, _grid_opt("seed of the init (and minibatches)")] = None,
    dtype: Annotated[str | None, _grid_opt("float32 | float64")] = None,
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
    executor: Annotated[str, _EXECUTOR] = "local",
    address: Annotated[str | None, _ADDRESS] = None,
    cpus_per_task: Annotated[float, _CPUS] = 1.0,
    gpus_per_task: Annotated[float, _GPUS] = 0.0,
) -> None:
    """Train a grid of runs (batched, in parallel), reusing those the store already has.

    Example: bnstruct sweep --task composite --depth 8,12,16 --width 64 --seed 0-4
    --lam 0.005,0.01 --steps 2000 --out runs"""
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .executors import execute, plan_batches, worker_plan
    from .executors._ray import ExecutionFailed
    from .store import _check_writable, finished
    from .sweep import grid, load_spec

    options: dict[str, object] = dict(load_spec(spec)) if spec is not None else {}
    given = {"task": task, "data": str(data) if data is not None else None, "model": model,
             "k": k, "n_train": n_train, "n_test": n_test, "d_in": d_in, "d_out": d_out,
             "data_seed": data_seed, "depth": depth, "width": width, "lam": lam, "lr": lr,
             "optimizer": optimizer, "steps": steps, "stage": stage or None, "seed": seed,
             "dtype": dtype, "device": device, "log_every": log_every,
             "checkpoint_every": checkpoint_every}
    options.update({kk: v for kk, v in given.items() if v is not None})
    if max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {max_batch}")
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    if executor == "ray":
        from .executors._ray import require_ray

        require_ray()
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    points = grid(options)
    configs = [p.config for p in points]
    reused = {c.default_name() for c in configs if finished(out_dir / c.default_name())}
    todo = [c for c in configs if c.default_name() not in reused]
    batches = plan_batches(todo, out_dir, max_batch=max_batch) if todo else []
    n_workers, threads = worker_plan(len(batches), workers)
    plan = (f"{len(configs)} run(s): {len(reused)} in the store, {len(todo)} to train in "
            + (f"{len(batches)} batch(es) on {n_workers} worker(s) x {threads} thread(s)"
               if executor == "local" else f"{len(batches)} batch(es)"
               + _ray_line(executor, address)))
    if dry_run:
        out.print(plan, highlight=False)
        for c in configs:
            tag = "  (in the store)" if c.default_name() in reused else ""
            out.print(f"  {c.default_name()}{tag}", highlight=False)
        return
    _check_writable(out_dir)
    err.print(plan, highlight=False)
    t0 = time.perf_counter()
    bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   console=err, disable=not err.is_terminal, transient=True)
    with bar:
        tid = bar.add_task("sweep", total=len(configs))
        failed: dict[str, str] = {}
        try:
            runs_: list[Any] = execute(
                configs, out_dir, progress=lambda c: bar.advance(tid), workers=workers,
                max_batch=max_batch, executor=executor, address=address,
                cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
        except ExecutionFailed as e:  # the others finished: table with the errors
            failed = e.errors
            runs_ = [e.runs.get(c.default_name()) or _FailedRun(c, e.errors[c.default_name()])
                     for c in configs]
    seconds = time.perf_counter() - t0
    varying = [n for n in points[0].values if len({repr(p.values[n]) for p in points}) > 1]
    t = Table(title=f"sweep into {out_dir}: {len(configs) - len(reused)} ran, {len(reused)} "
                    f"reused, {sum(r.status == 'diverged' for r in runs_)} diverged "
                    f"({seconds:.1f}s)", header_style="bold")
    for col in ["run", *varying, "status", "rel_fit", "param_norm2", "seconds"]:
        t.add_column(col, justify="left" if col in ("run", "status") else "right")
    for p, r in zip(points, runs_, strict=True):
        fin = r.summary["final"]
        what = "reused" if r.path.name in reused else "ran"
        status = r.status if r.status != "diverged" else (
            f"[red]diverged@{r.summary.get('diverged_at')}[/]")
        t.add_row(r.path.name, *[str(p.values[n]) for n in varying], f"{status} ({what})",
                  _num(fin.get("rel_fit"), ".3e"), _num(fin.get("param_norm2"), ".2f"),
                  f"{r.summary['seconds']:.1f}")
    out.print(t)
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


@app.command("runs")
def runs_cmd(
    store: Annotated[Path, typer.Argument(help="store directory")] = Path("runs"),
    where: Annotated[str | None, typer.Option(help="SQL WHERE clause, e.g. \"depth > 10\"")
                     ] = None,
    fmt: Annotated[Fmt, typer.Option("--format", help="table | csv | json")] = Fmt.table,
    columns: Annotated[str | None, typer.Option(help="comma list of columns to show")
                       ] = None,
) -> None:
    """List the runs of a store (its SQLite index)."""
    from .store import runs

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
        out.print(_df_table(df, title=f"{len(df)} run(s) in {store}"))


@app.command("fit-depth")
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
    from .depthfit import fit_depth_runs

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
    out.print(_df_table(show, title=f"depth fits (OLS, ± 1 standard error) in {store}"
                                    + (f", slope fixed at k={k:g}" if k is not None else "")))


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return "" if v != v else f"{v:.3g}"
    return str(v)


def analysis_table(a, *, all_columns: bool = False, title: str | None = None
                   ) -> Table:
    """The per-layer table of an :class:`~bnstruct.Analysis`.

    Default: the columns that fit a 100-column terminal (layer, shape, s1..s_k (at most 4),
    s_(k+1), near-1 count, gap rank, representation ranks, in-bottleneck); ``all_columns``:
    every column of :data:`bnstruct.diagnostics.LAYER_COLUMNS`."""
    from rich import box

    df = a.layers
    if all_columns:
        return _df_table(df, title=title)
    k = int(a.summary["k"])
    cols: list[tuple[str, list[str]]] = [
        ("layer", [str(v) for v in df["layer"]]),
        ("shape", [f"{o}x{i}" for o, i in zip(df["n_out"], df["n_in"], strict=True)]),
    ]
    for i in range(1, min(k, 4) + 1):
        cols.append((f"s{i}", [_fmt(v) for v in df[f"s{i}"]]))
    cols += [
        (f"s{k + 1}=s_k+1", [_fmt(v) for v in df["s_k1"]]),
        ("near1", [str(v) for v in df["near_one"]]),
        ("gap_at", [str(int(v)) if v == v else "" for v in df["gap_rank"]]),
        ("rep_rank", [str(v) for v in df["rep_rank_numerical"]]),
        ("rep_PR", [_fmt(v) for v in df["rep_erank_participation"]]),
        ("in_BN", [_fmt(v) for v in df["in_bottleneck"]]),
    ]
    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              padding=(0, 1), collapse_padding=True, show_edge=False,
              caption="near1: #s_i(W) in [0.5, 2]; gap_at: gap_rank of W; rep_rank: numerical "
                      "rank of the centered representation; rep_PR: its participation ratio; "
                      "in_BN: clear gap at k; --all: every column")
    for name, _ in cols:
        t.add_column(name, justify="left" if name == "shape" else "right", no_wrap=True)
    for r in range(len(df)):
        t.add_row(*[vals[r] for _, vals in cols])
    return t


def _compact_table(cols: list[tuple[str, list[str]]], title: str | None, caption: str
                   ) -> Table:
    from rich import box
    from rich.text import Text

    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              padding=(0, 1), collapse_padding=True, show_edge=False, caption=Text(caption))
    for name, _ in cols:
        t.add_column(name, justify="left" if name in ("name", "shape") else "right",
                     no_wrap=True)
    for r in range(len(cols[0][1]) if cols else 0):
        t.add_row(*[vals[r] for _, vals in cols])
    return t


def general_tables(a, *, title: str | None = None) -> tuple[Table, Table]:
    """The weight table and the representation table of a general model's analysis."""
    df, rp = a.layers, a.representations
    k = int(a.summary["k"])
    wcols: list[tuple[str, list[str]]] = [
        ("layer", [str(v) for v in df["layer"]]),
        ("name", [str(v) for v in df["name"]]),
        ("shape", [f"{o}x{i}" for o, i in zip(df["n_out"], df["n_in"], strict=True)]),
    ]
    for i in range(1, min(max(k + 1, 2), 4) + 1):
        wcols.append((f"s{i}", [_fmt(v) for v in df[f"s{i}"]]))
    wcols += [("gap_at", [str(int(v)) if v == v else "" for v in df["gap_rank"]]),
              ("stable", [_fmt(v) for v in df["stable_rank"]]),
              ("PR", [_fmt(v) for v in df["w_erank_participation"]])]
    rcols: list[tuple[str, list[str]]] = [
        ("rep", [str(v) for v in rp["rep"]]),
        ("name", [str(v) for v in rp["name"]]),
        ("shape", ["x".join(map(str, v)) for v in rp["shape"]]),
        ("rank", [str(v) for v in rp["rep_rank_numerical"]]),
        ("energy", [str(v) for v in rp["rep_energy_rank"]]),
        ("PR", [_fmt(v) for v in rp["rep_erank_participation"]]),
        ("ch_PR", [_fmt(v) for v in rp["chan_erank_participation"]]),
        ("jac", [str(v) for v in rp["jac_rank"]]),
        ("in_BN", [_fmt(v) for v in rp["in_bottleneck"]]),
    ]
    return (_compact_table(wcols, title, "weights: Linear [out, in], Conv as out x (in*k); "
                                         "gap_at: gap_rank; PR: participation ratio"),
            _compact_table(rcols, "representations",
                           "rank: numerical; energy: principal directions holding all but "
                           f"{a.summary['thresholds']['energy_tol']:g} of the energy; PR / "
                           "ch_PR: participation ratio of the flat / per-channel view; jac: "
                           "rank of d h / d x"))


def _load_user_model(spec: str, weights: Path | None):
    """``pkg.module:factory`` called with no arguments, then ``weights`` loaded (safetensors,
    or a state_dict through ``torch.load(weights_only=True)``; nothing else is unpickled)."""
    import importlib

    import torch

    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(f"--model {spec!r} must be 'package.module:factory'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"--model: cannot import {mod_name!r} ({e})") from None
    factory = getattr(mod, attr, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"--model: {mod_name!r} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as e:  # the user's code: report, do not trace back
        raise ConfigError(f"--model: {spec}() failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"--model: {spec}() returned a {type(model).__name__}, not an "
                          "nn.Module")
    if weights is None:
        return model
    if not weights.is_file():
        raise ConfigError(f"--weights {weights}: no such file")
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(weights))
        else:
            sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle that is not a plain state_dict
        raise ConfigError(f"--weights {weights}: cannot read it as safetensors or a "
                          f"state_dict ({type(e).__name__})") from None
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ConfigError(f"--weights {weights}: expected a state_dict (names -> tensors)")
    own = model.state_dict()
    missing = [n for n in own if n not in sd]
    extra = [n for n in sd if n not in own]
    shapes = [n for n in own if n in sd and tuple(sd[n].shape) != tuple(own[n].shape)]
    if missing or extra or shapes:
        parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:3])}"] if extra else []) + (
            [f"shape of {shapes[0]}: file {tuple(sd[shapes[0]].shape)}, model "
             f"{tuple(own[shapes[0]].shape)}"] if shapes else [])
        raise ConfigError(f"--weights {weights} do not match the model: {'; '.join(parts)}")
    model.load_state_dict(sd)
    return model


def _load_data(path: Path):
    import numpy as np
    import torch

    if not path.is_file():
        raise ConfigError(f"--data {path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ConfigError(f"--data {path}: not a .npy array ({type(e).__name__})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ConfigError(f"--data {path}: expected a numeric .npy array [N, ...]")
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def _check_figure_path(path: Path) -> None:
    """Reject a figure path matplotlib cannot write (unknown format, missing or read-only
    folder) before any work is done."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    ext = path.suffix.lower().lstrip(".")
    if ext not in formats:
        raise ConfigError(f"--plot {path}: unknown figure format {path.suffix or '(none)'!r}; "
                          f"use one of {', '.join('.' + f for f in sorted(formats))}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--plot {path}: the folder {parent} does not exist or is not "
                          "writable")


@app.command("analyze")
def analyze_cmd(
    run_dir: Annotated[Path | None, typer.Argument(
        help="a run directory written by bnstruct train (or use --model/--data)")] = None,
    model_spec: Annotated[str | None, typer.Option(
        "--model", help="your model: 'package.module:factory' (called with no arguments)")
    ] = None,
    weights: Annotated[Path | None, typer.Option(
        help="weights for --model: .safetensors, or a state_dict saved by torch.save")] = None,
    data: Annotated[Path | None, typer.Option(help="points for --model: X as a .npy file")
                    ] = None,
    layers: Annotated[str | None, typer.Option(
        help="comma-separated module names whose outputs are the representations")] = None,
    output: Annotated[str | None, typer.Option(
        help="which output to analyze when the model returns a tuple (index) or dict (key)")
    ] = None,
    k: Annotated[int | None, typer.Option(
        help="bottleneck rank to test (default: estimated from the network)")] = None,
    points: Annotated[int | None, typer.Option(
        help="analyze the first N training points (default: all)")] = None,
    hessian: Annotated[bool, typer.Option(
        help="also the top Hessian eigenvalue of the last stage's objective (slower)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print everything as strict JSON")
                       ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print the per-layer table (every "
                                                      "column) as CSV")] = False,
    all_columns: Annotated[bool, typer.Option("--all", help="show every column of the "
                                                            "per-layer table")] = False,
    plot: Annotated[Path | None, typer.Option(
        help="write the figures (weight spectra, representation ranks, PCA) to FILE")] = None,
) -> None:
    """Diagnose a trained network layer by layer: spectra, ranks, bound, NTK (float64)."""
    from .diagnostics import analyze
    from .store import load_run

    if as_json and as_csv:
        raise ConfigError("--json and --csv exclude each other: choose one")
    if points is not None and points < 1:
        raise ConfigError(f"--points must be >= 1, got {points}")
    if plot is not None:
        _check_figure_path(plot)
    if model_spec is not None or data is not None:
        if run_dir is not None:
            raise ConfigError("give a run directory or --model/--data, not both")
        if model_spec is None or data is None:
            raise ConfigError("--model and --data go together (and --weights, usually)")
        if hessian:
            raise ConfigError("--hessian needs the targets of a run: analyze a run directory")
        user = _load_user_model(model_spec, weights)
        X = _load_data(data)
        if points is not None:
            if points > X.shape[0]:
                raise ConfigError(f"--points {points} exceeds the {X.shape[0]} points of "
                                  f"{data}")
            X = X[:points]
        sel: int | str | None = None
        if output is not None:
            sel = int(output) if output.lstrip("-").isdigit() else output
        names = None if layers is None else [n.strip() for n in layers.split(",") if n.strip()]
        a = analyze(user, X, k, layers=names, output=sel)
        a.summary["model_spec"] = model_spec
        if plot is not None:
            try:
                a.plot(plot)
            except OSError as e:
                raise ConfigError(f"cannot write --plot {plot}: {e.strerror or e}") from None
        _print_analysis(a, f"layers of {model_spec}", as_json=as_json, as_csv=as_csv,
                        all_columns=all_columns)
        if plot is not None and not (as_json or as_csv):
            out.print(f"figure written to {plot}", highlight=False)
        return
    if weights is not None or layers is not None or output is not None:
        raise ConfigError("--weights, --layers and --output go with --model/--data")
    if run_dir is None:
        raise ConfigError("give a run directory, or --model and --data")
    r = load_run(run_dir)
    X, Y = r.task.X, r.task.Y
    if points is not None:
        if points > X.shape[0]:
            raise ConfigError(f"--points {points} exceeds the run's {X.shape[0]} training "
                              "points")
        X, Y = X[:points], Y[:points]
    last = r.config.stages[-1]
    a = analyze(r.model, X, k, Y=Y, lam=last.lam, hessian=hessian, lr=last.lr)
    a.summary["run"] = str(r.path)
    a.summary["task_bn_rank"] = r.task.bn_rank
    if plot is not None:
        color, label = _pca_color(r.task, X.shape[0])
        try:
            a.plot(plot, color=color, color_label=label)
        except OSError as e:
            raise ConfigError(f"cannot write --plot {plot}: {e.strerror or e}") from None
    _print_analysis(a, f"layers of {r.path}", as_json=as_json, as_csv=as_csv,
                    all_columns=all_columns)
    if plot is not None and not (as_json or as_csv):
        out.print(f"figure written to {plot}", highlight=False)


def _print_analysis(a, title: str, *, as_json: bool, as_csv: bool,
                    all_columns: bool) -> None:
    from ._io import dumps

    if as_json:
        sys.stdout.write(dumps(a.to_dict()) + "\n")
        return
    if as_csv:
        sys.stdout.write(a.layers.to_csv(index=False))
        if a.representations is not None:
            sys.stdout.write("\n" + a.representations.to_csv(index=False))
        return
    if a.representations is not None and not all_columns:
        for tab in general_tables(a, title=title):
            out.print(tab, width=min(out.width, 100))
    elif all_columns:  # as wide as it takes: no column squeezed
        import io

        wide = Console(width=10_000, record=True, file=io.StringIO())
        wide.print(analysis_table(a, all_columns=True))
        out.print(title, highlight=False)
        if a.representations is not None:
            wide.print(_df_table(a.representations, title="representations"))
        sys.stdout.write("\n".join(line.rstrip() for line in wide.export_text().splitlines())
                         + "\n")
    else:
        out.print(analysis_table(a, title=title), width=min(out.width, 100))
    t = Table(title="summary", header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for key, v in a.summary.items():
        if key in ("thresholds", "conventions"):
            continue
        t.add_row(key, f"{v:.6g}" if isinstance(v, float) else str(v))
    out.print(t)
    out.print("thresholds: " + ", ".join(f"{kk}={vv:g}" for kk, vv in
                                         a.summary["thresholds"].items()), highlight=False)


bench_app = typer.Typer(help="Benchmarks: ratios against a baseline measured in the same process.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("train")
def bench_train_cmd(
    depth: Annotated[int, typer.Option(help="number of weight matrices")] = 12,
    width: Annotated[int, typer.Option(help="hidden width")] = 64,
    n: Annotated[int, typer.Option(help="training points (full batch)")] = 256,
    rounds: Annotated[int, typer.Option(help="interleaved timing rounds")] = 5,
) -> None:
    """Time bnstruct's training step against a plain PyTorch loop (the composite task)."""
    from .bench import bench_train

    for nm, v in (("depth", depth), ("width", width), ("n", n), ("rounds", rounds)):
        if v < 1:
            raise ConfigError(f"--{nm} must be >= 1, got {v}")
    df = bench_train(depth=depth, width=width, n=n, rounds=rounds)
    out.print(_df_table(df, title=f"training step, L={depth} width={width} N={n} float32, "
                                  f"{torch_threads()} threads ({df.attrs['load']})"))


@bench_app.command("sweep")
def bench_sweep_cmd(
    batch: Annotated[int, typer.Option(help="networks in the batched step")] = 8,
    depth: Annotated[int, typer.Option(help="depth of the batched-step networks")] = 12,
    width: Annotated[int, typer.Option(help="hidden width")] = 64,
    n: Annotated[int, typer.Option(help="training points (full batch)")] = 256,
    seeds: Annotated[int, typer.Option(help="seeds per depth in the sweep")] = 3,
    steps: Annotated[int, typer.Option(help="steps per run in the sweep")] = 600,
    rounds: Annotated[int, typer.Option(help="interleaved timing rounds of the step")] = 5,
    sweep_rounds: Annotated[int, typer.Option(help="interleaved rounds of the sweep")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Batched training vs one network at a time: the step (B networks vs 1) and a
    6-depth sweep (executor vs one run after another)."""
    from ._io import dumps
    from .bench import bench_sweep

    for nm, v in (("batch", batch), ("depth", depth), ("width", width), ("n", n),
                  ("seeds", seeds), ("steps", steps), ("rounds", rounds),
                  ("sweep-rounds", sweep_rounds)):
        if v < 1:
            raise ConfigError(f"--{nm} must be >= 1, got {v}")
    if steps < 3:
        raise ConfigError(f"--steps must be >= 3 (the default recipe), got {steps}")
    df = bench_sweep(batch=batch, depth=depth, width=width, n=n, seeds=seeds, steps=steps,
                     rounds=rounds, sweep_rounds=sweep_rounds)
    if as_json:
        sys.stdout.write(dumps({"threads": torch_threads(), "load": df.attrs["load"],
                                "rows": df.to_dict("records")}) + "\n")
        return
    out.print(_df_table(df, title=f"batched training, float32, {torch_threads()} threads "
                                  f"({df.attrs['load']})"))


@bench_app.command("plan")
def bench_plan_cmd(
    mode: Annotated[str, typer.Option(help="reproduce mode whose runs to estimate")] = "quick",
    only: Annotated[list[str] | None, typer.Option(help="only these experiments")] = None,
    workers: Annotated[int | None, typer.Option(help="workers of the schedule")] = None,
    sample_steps: Annotated[int, typer.Option(help="steps timed per stage of a batch")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Estimate the training of `reproduce --mode`'s planned runs in seconds: core-seconds
    per batch (a few timed steps of each), their sum and the wall time on N workers."""
    from ._io import dumps
    from .bench import estimate_training, reproduce_configs
    from .experiments import EXPERIMENTS, MODES

    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    bad = [n for n in only or [] if n not in EXPERIMENTS]
    if bad:
        raise ConfigError(f"unknown experiment(s) {bad}: choose from {', '.join(EXPERIMENTS)}")
    if sample_steps < 1 or (workers is not None and workers < 1):
        raise ConfigError("--sample-steps and --workers must be >= 1")
    df = estimate_training(reproduce_configs(mode, only), sample_steps=sample_steps,
                           workers=workers)
    a = df.attrs
    if as_json:
        sys.stdout.write(dumps({"mode": mode, **a, "rows": df.to_dict("records")}) + "\n")
        return
    out.print(_df_table(df, title=f"reproduce --{mode}: training estimate, one thread per "
                                  f"worker ({a['load']})"))
    out.print(f"{a['core_seconds']:.0f} core-seconds of training; about "
              f"{a['makespan_s']:.0f} s on {a['workers']} worker(s) (longest batch first), "
              "plus process start-up and the claims' measurements", highlight=False)


@bench_app.command("ntk")
def bench_ntk_cmd(
    depth: Annotated[int, typer.Option(help="number of weight matrices")] = 12,
    width: Annotated[int, typer.Option(help="hidden width")] = 64,
    n: Annotated[int, typer.Option(help="points")] = 256,
    rounds: Annotated[int, typer.Option(help="timing rounds of the fast paths")] = 3,
) -> None:
    """Time the per-layer NTK (full, trace), Lanczos and analyze against torch.func."""
    from .bench import bench_ntk

    for nm, v in (("depth", depth), ("width", width), ("n", n), ("rounds", rounds)):
        if v < 1:
            raise ConfigError(f"--{nm} must be >= 1, got {v}")
    df = bench_ntk(depth=depth, width=width, n=n, rounds=rounds)
    out.print(_df_table(df, title=f"NTK, L={depth} width={width} N={n} d_out=20 float64, "
                                  f"{torch_threads()} threads, peak RSS before the runs "
                                  f"{df.attrs['rss_at_start_mb']:.0f} MB"))


@bench_app.command("analyze")
def bench_analyze_cmd(
    depth: Annotated[int, typer.Option(help="number of weight matrices")] = 12,
    width: Annotated[int, typer.Option(help="hidden width")] = 64,
    n: Annotated[int, typer.Option(help="points")] = 256,
    d_out: Annotated[int, typer.Option(help="output dimension")] = 20,
    rounds: Annotated[int, typer.Option(help="interleaved timing rounds")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print strict JSON")] = False,
) -> None:
    """Time analyze against calling the public diagnostics one by one (same process)."""
    from ._io import dumps
    from .bench import bench_analyze

    for nm, v in (("depth", depth), ("width", width), ("n", n), ("d-out", d_out),
                  ("rounds", rounds)):
        if v < 1:
            raise ConfigError(f"--{nm} must be >= 1, got {v}")
    df = bench_analyze(depth=depth, width=width, n=n, d_out=d_out, rounds=rounds)
    if as_json:
        sys.stdout.write(dumps({"rows": df.to_dict(orient="records"), **df.attrs}) + "\n")
        return
    out.print(_df_table(df, title=f"analyze vs public functions one by one: "
                                  f"{df.attrs['setup']}"))
    out.print(f"same results: ntk_max_eig rel. diff {df.attrs['ntk_max_eig_rel_diff']:.2g}, "
              f"bound slack diff {df.attrs['bound_slack_min_diff']:.2g}", highlight=False)


@bench_app.command("analyze-general")
def bench_analyze_general_cmd(
    n: Annotated[int, typer.Option(help="points (scikit-learn digits)")] = 512,
    float32: Annotated[bool, typer.Option("--float32", help="compute in float32 (default "
                                                             "float64)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print strict JSON")] = False,
) -> None:
    """Time and memory of analyze on a ~1M-parameter residual CNN (torch.func path)."""
    import torch

    from ._io import dumps
    from .bench import bench_analyze_general

    if not 1 <= n <= 1797:
        raise ConfigError(f"--n must be in 1..1797 (the digits data set), got {n}")
    df = bench_analyze_general(n=n, dtype=torch.float32 if float32 else torch.float64)
    if as_json:
        sys.stdout.write(dumps({"rows": df.to_dict(orient="records"), **df.attrs}) + "\n")
        return
    out.print(_df_table(df, title=f"analyze of a general model: {df.attrs['setup']}"))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@app.command("reproduce")
def reproduce_cmd(
    quick: Annotated[bool, typer.Option("--quick", help="every claim on a 2-core CPU "
                                        "(<= 15 min; the default)")] = False,
    full: Annotated[bool, typer.Option("--full", help="the paper's scale (meant for a GPU)")
                    ] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny sizes, < 2 min: checks the "
                                        "pipeline, exit 0 when every experiment ran")] = False,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="run only this experiment (repeatable)")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="output directory (runs, figures, "
                                          "claims.json/md, report.html)")] = Path("reproduce"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "cpu",
    executor: Annotated[str, _EXECUTOR] = "local",
    address: Annotated[str | None, _ADDRESS] = None,
    cpus_per_task: Annotated[float, _CPUS] = 1.0,
    gpus_per_task: Annotated[float, _GPUS] = 0.0,
) -> None:
    """Reproduce the paper's claims: a claims table with measured numbers, figures and an
    HTML report. Every claim's training runs are planned first and trained together, then
    each claim is measured. Exit 0 when every claim passes, 1 otherwise (the report is written
    either way); with --smoke, 0 when every experiment ran to a verdict (no error)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from .config import resolve_device
    from .experiments import EXPERIMENTS
    from .report import reproduce

    if sum((quick, full, smoke)) > 1:
        raise ConfigError("choose at most one of --quick, --full, --smoke")
    mode = "full" if full else "smoke" if smoke else "quick"
    resolve_device(device)
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    if executor == "ray":
        from .executors._ray import require_ray

        require_ray()
    names = list(only) if only else list(EXPERIMENTS)
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise ConfigError(f"unknown experiment(s) {bad}: choose from {', '.join(EXPERIMENTS)}")
    bar = Progress(TextColumn("[bold]reproduce"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err)
    with bar:
        tid = bar.add_task("reproduce", total=len(names), info="")
        claims = reproduce(
            mode, out_dir, only=names, device=device,
            on_start=lambda n: bar.update(tid, info=n),
            on_note=lambda m: bar.update(tid, info=m),
            on_done=lambda c: bar.advance(tid),
            executor={"executor": executor, "address": address,
                      "cpus_per_task": cpus_per_task, "gpus_per_task": gpus_per_task})
    t = Table(title=f"bnstruct reproduce --{mode}: {sum(c.passed for c in claims)}/"
                    f"{len(claims)} passed", header_style="bold", show_lines=True)
    for col in ("claim", "verdict", "measured", "expected", "tolerance", "s"):
        t.add_column(col, justify="right" if col == "s" else "left")
    for c in claims:
        word = "ERROR" if c.error is not None else c.outcome
        style = "green" if c.passed else "red"
        t.add_row(c.name, f"[{style}]{word}[/]", f"error: {c.error}" if c.error else c.measured,
                  c.expected, c.tolerance, f"{c.seconds:.1f}")
    out.print(t)
    out.print(f"report: {out_dir / 'report.html'}", highlight=False)
    if mode == "smoke":  # the pipeline ran: no experiment crashed
        raise typer.Exit(0 if all(c.error is None for c in claims) else 1)
    raise typer.Exit(0 if all(c.passed for c in claims) else 1)


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
