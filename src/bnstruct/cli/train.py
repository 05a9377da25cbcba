"""``bnstruct train``: one run into a store (a thin layer over :func:`bnstruct.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ._app import err, num, out


def _parse_width(text: str) -> int | tuple[int, ...]:
    try:
        ws = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ConfigError(f"--width {text!r} must be an integer or a comma list of integers"
                          ) from None
    return ws[0] if len(ws) == 1 else ws


def train(
    task: Annotated[str, typer.Option(help="composite | teacher | symmetry | linear | digits")
                    ] = "composite",
    data: Annotated[Path | None, typer.Option(
        help=".npz with arrays X, Y (optional X_test, Y_test); replaces --task")] = None,
    model: Annotated[str, typer.Option(
        help="mlp (ReLU), linear (deep linear) or leaky-resnet (needs --leak)")] = "mlp",
    leak: Annotated[float | None, typer.Option(
        help="leaky-resnet: the effective depth Lt (rho_l * Lt < 1)")] = None,
    adapt_every: Annotated[int | None, typer.Option(
        help="leaky-resnet: re-set the layer steps every N steps (THEORY 7.6)")] = None,
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
    from ..executors import run
    from ..sweep import config_from

    cfg, the_task = config_from(
        task=task, data=data, model=model, k=k, n_train=n_train, n_test=n_test, d_in=d_in,
        d_out=d_out, data_seed=data_seed, depth=depth, width=_parse_width(width), lam=lam,
        lr=lr, optimizer=optimizer, steps=steps, stage=stage, seed=seed, device=device,
        dtype=dtype, log_every=log_every, checkpoint_every=checkpoint_every, leak=leak,
        adapt_every=adapt_every)
    if data is None:
        cfg.task.build()  # a task option its builder rejects fails before anything is written
    r = run(cfg, out_dir, name=name, resume=resume, progress=False if quiet else None,
            task=the_task, wait=wait)
    out.print(_run_line(r), highlight=False)
    if r.status == "completed":
        _warn_if_not_converged(r)
    if r.status == "interrupted":
        err.print(f"interrupted at step {r.summary['step']}: continue with the same command "
                  "and --resume", highlight=False)
        raise typer.Exit(130)


def _run_line(r) -> str:
    """What ``train`` ends with: the status and the run directory (whole, to copy), then the
    numbers on a second line (each short of 100 columns), then the convergence warning of
    the final state when training ended far from a stationary point."""
    fin = r.summary["final"]
    nums = (f"steps {r.summary['step']} · rel_fit {num(fin.get('rel_fit'), '.2e')} · rel_test "
            f"{num(fin.get('rel_test_error'), '.2e')} · param_norm2 "
            f"{num(fin.get('param_norm2'), '.1f')}")
    n2, k = fin.get("param_norm2"), r.summary.get("bn_rank")
    if k and n2 is not None:
        nums += f" (/kL {n2 / (k * r.config.model.depth):.2f})"
    nums += f" · {r.summary['seconds']:.1f} s"
    return f"{r.status}: {r.path}\n{nums}"


def _warn_if_not_converged(r) -> None:
    """The stationarity warning of the final weights (:func:`bnstruct.stationarity`: the
    objective's gradient along the neuron-rescaling directions, and the fit)."""
    from rich.text import Text

    from ..diagnostics import stationarity
    from ..models import LeakyResNet

    if isinstance(r.model, LeakyResNet):  # (the MLPs' rescaling test; not a chain)
        return
    s = stationarity(r.model, r.task.X, r.task.Y, r.config.stages[-1].lam)
    if s.warning:
        out.print(Text.assemble(("warning: ", "bold yellow"), s.warning))
