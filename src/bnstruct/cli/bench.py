"""``bnstruct bench ...``: thin layers over :mod:`bnstruct.bench`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import ConfigError
from ._app import out, print_df, torch_threads

bench_app = typer.Typer(help="Benchmarks: ratios against a baseline measured in the same process.",
                        no_args_is_help=True)


@bench_app.command("train")
def bench_train_cmd(
    depth: Annotated[int, typer.Option(help="number of weight matrices")] = 12,
    width: Annotated[int, typer.Option(help="hidden width")] = 64,
    n: Annotated[int, typer.Option(help="training points (full batch)")] = 256,
    rounds: Annotated[int, typer.Option(help="interleaved timing rounds")] = 5,
) -> None:
    """Time bnstruct's training step against a plain PyTorch loop (the composite task)."""
    from ..bench import bench_train

    for nm, v in (("depth", depth), ("width", width), ("n", n), ("rounds", rounds)):
        if v < 1:
            raise ConfigError(f"--{nm} must be >= 1, got {v}")
    df = bench_train(depth=depth, width=width, n=n, rounds=rounds)
    print_df(df, title=f"training step, L={depth} width={width} N={n} float32, "
                       f"{torch_threads()} threads ({df.attrs['load']})")


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
    from .._io import dumps
    from ..bench import bench_sweep

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
    print_df(df, title=f"batched training, float32, {torch_threads()} threads "
                       f"({df.attrs['load']})")


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
    from .._io import dumps
    from ..bench import estimate_training, reproduce_configs
    from ..experiments import EXPERIMENTS, MODES

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
    print_df(df, title=f"reproduce --{mode}: training estimate, one thread per "
                       f"worker ({a['load']})")
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
    from ..bench import bench_ntk

    for nm, v in (("depth", depth), ("width", width), ("n", n), ("rounds", rounds)):
        if v < 1:
            raise ConfigError(f"--{nm} must be >= 1, got {v}")
    df = bench_ntk(depth=depth, width=width, n=n, rounds=rounds)
    print_df(df, title=f"NTK, L={depth} width={width} N={n} d_out=20 float64, "
                       f"{torch_threads()} threads, peak RSS before the runs "
                       f"{df.attrs['rss_at_start_mb']:.0f} MB")


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
    from .._io import dumps
    from ..bench import bench_analyze

    for nm, v in (("depth", depth), ("width", width), ("n", n), ("d-out", d_out),
                  ("rounds", rounds)):
        if v < 1:
            raise ConfigError(f"--{nm} must be >= 1, got {v}")
    df = bench_analyze(depth=depth, width=width, n=n, d_out=d_out, rounds=rounds)
    if as_json:
        sys.stdout.write(dumps({"rows": df.to_dict(orient="records"), **df.attrs}) + "\n")
        return
    print_df(df, title=f"analyze vs public functions one by one: "
                       f"{df.attrs['setup']}")
    out.print(f"same results: ntk_max_eig rel. diff {df.attrs['ntk_max_eig_rel_diff']:.2g}, "
              f"bound slack diff {df.attrs['bound_slack_min_diff']:.2g}", highlight=False)
    out.print(f"analyze / floor {df.attrs['analyze_vs_floor']:.2f} (target <= 1.2)",
              highlight=False)
    h = df.attrs["hvp"]
    per = ", ".join(f"{m} {t * 1e3:.1f} ms" for m, t in h["seconds_per_product"].items())
    out.print(f"Hessian-vector product ({h['n_params']} parameters): {per}; faster: "
              f"{h['faster']}, used here: {h['used']}, max rel. diff "
              f"{h['max_rel_diff']:.1g}", highlight=False)


@bench_app.command("analyze-general")
def bench_analyze_general_cmd(
    n: Annotated[int, typer.Option(help="points (scikit-learn digits)")] = 512,
    float32: Annotated[bool, typer.Option("--float32", help="compute in float32 (default "
                                                             "float64)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print strict JSON")] = False,
) -> None:
    """Time and memory of analyze on a ~1M-parameter residual CNN (torch.func path)."""
    import torch

    from .._io import dumps
    from ..bench import bench_analyze_general

    if not 1 <= n <= 1797:
        raise ConfigError(f"--n must be in 1..1797 (the digits data set), got {n}")
    df = bench_analyze_general(n=n, dtype=torch.float32 if float32 else torch.float64)
    if as_json:
        sys.stdout.write(dumps({"rows": df.to_dict(orient="records"), **df.attrs}) + "\n")
        return
    print_df(df, title=f"analyze of a general model: {df.attrs['setup']}")

