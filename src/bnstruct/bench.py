"""Benchmarks measured as ratios against a baseline run in the same process.

Machines here are noisy, so absolute times are not evidence: every benchmark interleaves the
candidate and its baseline over several rounds and reports the best time of each, their ratio,
and the achieved GFLOP/s next to the machine's measured matmul rate (the floor of the work is
FLOPs / matmul rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

__all__ = ["matmul_rate", "time_interleaved", "bench_train", "mlp_step_flops", "bench_ntk"]


def time_interleaved(fns: dict[str, Callable[[], object]], *, repeats: int = 50,
                     rounds: int = 5, warmup: int = 10) -> dict[str, float]:
    """Best seconds per call of each function, measured in interleaved rounds."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(repeats):
                f()
            best[k] = min(best[k], (time.perf_counter() - t) / repeats)
    return best


def matmul_rate(n: int = 1024, dtype: torch.dtype = torch.float32, device: str = "cpu",
                repeats: int = 10) -> float:
    """Measured dense matmul throughput in GFLOP/s (``n x n`` times ``n x n``: ``2 n^3`` FLOPs)."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    t = time_interleaved({"mm": lambda: a @ b}, repeats=repeats, rounds=3, warmup=2)["mm"]
    return 2 * n**3 / t / 1e9


def mlp_step_flops(sizes: list[int], n: int) -> float:
    """FLOPs of one full-batch training step of an MLP with layer sizes ``sizes`` on ``n``
    points: forward ``2 n sum_l n_l n_{l-1}``, backward twice that (input and weight
    gradients), minus the unneeded input gradient of the first layer."""
    mac = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return 2.0 * n * (3 * mac - sizes[0] * sizes[1])


def bench_train(*, depth: int = 12, width: int = 64, n: int = 256, lam: float = 0.02,
                lr: float = 1e-3, repeats: int = 50, rounds: int = 5,
                dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """Time bnstruct's training step against the loop a user would write.

    Baseline: ``nn.Sequential`` of Linear/ReLU, ``torch.optim.Adam`` with default options and the
    penalty ``lam * sum(p.pow(2).sum())`` summed in Python and backpropagated. Candidate:
    :func:`bnstruct.training.step`, the step :func:`bnstruct.train` runs (same objective, the
    penalty as coupled weight decay in the optimizer, the loss kept on the device for the
    divergence check). Both on the default ``composite`` task. Returns one row per variant
    with ms/step, speedup over the baseline, GFLOP/s, the matmul rate and the floor
    (FLOPs / matmul rate).
    """
    from .models import MLP
    from .tasks import composite
    from .training import Stage, make_optimizer, step

    task = composite(n_train=n, seed=0).to(dtype=dtype)
    X, Y = task.X, task.Y

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    d = task.d_in
    for _ in range(depth - 1):
        layers += [nn.Linear(d, width, dtype=dtype), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, task.d_out, dtype=dtype))
    net = nn.Sequential(*layers)
    user_opt = torch.optim.Adam(net.parameters(), lr=lr)

    def user_step() -> None:
        user_opt.zero_grad()
        loss = ((net(X) - Y) ** 2).sum(1).mean()
        loss = loss + lam * sum(p.pow(2).sum() for p in net.parameters())
        loss.backward()
        user_opt.step()

    model = MLP(task.d_in, width, depth, task.d_out, seed=0, dtype=dtype)
    opt = make_optimizer(Stage("adam", lr, lam, 1), model.parameters())
    losses = torch.empty(100, dtype=dtype)
    count = [0]

    def bn_step() -> None:
        step(model, opt, X, Y, losses, count[0] % 100)
        count[0] += 1

    best = time_interleaved({"user loop (nn.Sequential + Adam + Python penalty)": user_step,
                             "bnstruct.train step": bn_step}, repeats=repeats, rounds=rounds)
    flops = mlp_step_flops(model.sizes, n)
    rate = matmul_rate(dtype=dtype)
    base = best["user loop (nn.Sequential + Adam + Python penalty)"]
    return pd.DataFrame([{"variant": k, "ms_per_step": t * 1e3, "speedup": base / t,
                          "gflops": flops / t / 1e9, "matmul_gflops": rate,
                          "floor_ms": flops / (rate * 1e9) * 1e3}
                         for k, t in best.items()])


def bench_sweep(*, batch: int = 8, depth: int = 12, width: int = 64, n: int = 256,
                depths: tuple[int, ...] = (8, 10, 12, 14, 16, 20), seeds: int = 3,
                steps: int = 600, repeats: int = 20, rounds: int = 5,
                dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """Batched training against one network at a time, as ratios measured in this process.

    Rows:

    - ``batched step``: the per-network time of :func:`bnstruct.training.batched_step` on
      ``batch`` networks (depth ``depth``, width ``width``, ``n`` points, full batch, Adam,
      per-network lr and lam) vs :func:`bnstruct.training.step` on one (interleaved rounds);
      GFLOP/s of each and their fraction of the measured matmul rate (target >= 1.8x);
    - ``sweep``: wall time of :func:`bnstruct.executors.execute` on a ``len(depths)`` x
      ``seeds`` grid (the quick depth sweep's shapes, ``steps`` steps of the default recipe,
      float32) into an empty store vs :func:`bnstruct.run` on the same configs one after
      another (target >= 2.5x);
    - ``workers``: one single-thread worker per core vs one worker with every core as threads
      (the measurement behind :func:`bnstruct.executors.worker_plan`'s rule, which also
      leaves out cores that other work keeps busy).
    """
    import tempfile

    from .config import ModelSpec, RunConfig
    from .executors import available_cores, execute, worker_plan
    from .models import MLP
    from .store import run
    from .tasks import TaskSpec, composite
    from .training import (
        StackedNet,
        Stage,
        batched_step,
        default_recipe,
        make_optimizer,
        step,
    )
    from .training._batched import _coeffs

    task = composite(n_train=n, seed=0).to(dtype=dtype)
    X, Y = task.X, task.Y
    model = MLP(task.d_in, width, depth, task.d_out, seed=0, dtype=dtype)
    opt = make_optimizer(Stage("adam", 1e-3, 0.01, 1), model.parameters())
    losses = torch.empty(100, dtype=dtype)
    nets = [MLP(task.d_in, width, depth, task.d_out, seed=s, dtype=dtype) for s in range(batch)]
    stages = [Stage("adam", 1e-3 * (1 + s / batch), 0.01 * (1 + s), 1) for s in range(batch)]
    net = StackedNet(nets)
    bopt = make_optimizer(stages[0], [net.flat], lr=1.0, weight_decay=0.0)
    lr, wd = _coeffs(stages, net)
    old = torch.empty_like(net.flat)
    blosses = torch.empty(100, batch, dtype=dtype)
    count = [0]

    def single() -> None:
        step(model, opt, X, Y, losses, count[0] % 100)
        count[0] += 1

    def batched() -> None:
        batched_step(net, bopt, X, Y, blosses, count[0] % 100, lr, wd, old)
        count[0] += 1

    best = time_interleaved({"single": single, "batched": batched}, repeats=repeats,
                            rounds=rounds)
    flops = mlp_step_flops(model.sizes, n)
    rate = matmul_rate(dtype=dtype)
    per_net = best["batched"] / batch
    rows = [{"measurement": f"batched step, B={batch} (per network)",
             "candidate_s": per_net, "baseline_s": best["single"],
             "speedup": best["single"] / per_net, "target": ">= 1.8x",
             "gflops": flops / per_net / 1e9, "baseline_gflops": flops / best["single"] / 1e9,
             "matmul_gflops": rate, "fraction_of_matmul": flops / per_net / 1e9 / rate}]

    configs = [RunConfig(task=TaskSpec("composite", (("n_train", n),)),
                         model=ModelSpec("mlp", width, d), stages=default_recipe(steps=steps),
                         seed=s, log_every=max(1, steps // 4), checkpoint_every=None,
                         device="cpu")
               for d in depths for s in range(seeds)]
    cores = available_cores()

    def timed(f: Callable[[str], object]) -> float:
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            f(d)
            return time.perf_counter() - t

    t_one = timed(lambda d: [run(c, d, progress=False) for c in configs])
    w, th = worker_plan(len(depths))
    t_exec = timed(lambda d: execute(configs, d))
    t_2x1 = timed(lambda d: execute(configs, d, workers=cores, threads=1))
    t_1x2 = timed(lambda d: execute(configs, d, workers=1, threads=cores))
    rows.append({"measurement": f"sweep {len(depths)} depths x {seeds} seeds, {steps} steps "
                                f"(executor, its plan {w}x{th}, vs one by one)",
                 "candidate_s": t_exec, "baseline_s": t_one, "speedup": t_one / t_exec,
                 "target": ">= 2.5x"})
    rows.append({"measurement": f"workers: {cores} worker(s) x 1 thread vs 1 x {cores}",
                 "candidate_s": t_2x1, "baseline_s": t_1x2, "speedup": t_1x2 / t_2x1,
                 "target": "the rule's evidence"})
    return pd.DataFrame(rows)


def _peak_rss_mb() -> float:
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


def bench_ntk(*, depth: int = 12, width: int = 64, n: int = 256, rounds: int = 3,
              baseline_rounds: int = 1) -> pd.DataFrame:
    """Time the per-layer NTK against ``torch.func`` Jacobian contraction, float64.

    Network: :class:`bnstruct.MLP` ``(20, width, depth, 20)`` (He init, seed 0) on the
    ``composite`` task's first ``n`` inputs. Rows:

    - ``ntk full``: :func:`bnstruct.ntk` ``mode="full"`` vs the PyTorch NTK-tutorial
      contraction (``vmap(jacrev)`` per-sample parameter Jacobians, ``einsum`` per parameter);
    - ``ntk trace``: ``mode="trace"`` vs per-sample Jacobian norms from ``vmap(jacrev)``;
    - ``analyze``: wall time of :func:`bnstruct.analyze` (NTK trace and Lanczos top
      eigenvalue included, no Hessian), target < 3 s;
    - ``ntk_max_eig``: Lanczos wall time.

    Candidates are timed first (best of ``rounds``) and the process's peak RSS is read before
    any baseline runs, so ``peak_rss_mb`` of candidate rows bounds their memory; baselines
    run ``baseline_rounds`` times (the full contraction takes minutes on 2 cores). Every
    candidate is also checked against its baseline (``max_rel_diff``).
    """
    from .diagnostics import analyze, ntk, ntk_max_eig
    from .diagnostics.reference import ntk_reference
    from .models import MLP
    from .tasks import composite

    task = composite(n_train=n, seed=0)
    X = task.X.to(torch.float64)
    model = MLP(X.shape[1], width, depth, task.d_out, seed=0, dtype=torch.float64)

    def best(f: Callable[[], object], r: int) -> tuple[float, object]:
        t_best, val = float("inf"), None
        for _ in range(r):
            t = time.perf_counter()
            val = f()
            t_best = min(t_best, time.perf_counter() - t)
        return t_best, val

    rss0 = _peak_rss_mb()
    t_tr, tr = best(lambda: ntk(model, X, mode="trace"), rounds)
    t_eig, _ = best(lambda: ntk_max_eig(model, X), rounds)
    t_an, _ = best(lambda: analyze(model, X), rounds)
    rss_small = _peak_rss_mb()
    t_full, full = best(lambda: ntk(model, X, mode="full"), rounds)
    rss_full = _peak_rss_mb()
    with torch.no_grad():
        t_tr_ref, tr_ref = best(lambda: ntk_reference(model, X, mode="trace"), baseline_rounds)
        rss_tr_ref = _peak_rss_mb()
        t_full_ref, full_ref = best(lambda: ntk_reference(model, X, mode="full"),
                                    baseline_rounds)
    rss_full_ref = _peak_rss_mb()

    def rel(a: object, b: object) -> float:
        assert torch.is_tensor(a) and torch.is_tensor(b)
        return float((a - b).abs().max() / b.abs().max())

    rows = [
        {"measurement": "ntk full", "candidate_s": t_full, "baseline_s": t_full_ref,
         "speedup": t_full_ref / t_full, "target": ">= 20x", "max_rel_diff": rel(full, full_ref),
         "peak_rss_mb": rss_full, "baseline_peak_rss_mb": rss_full_ref},
        {"measurement": "ntk trace", "candidate_s": t_tr, "baseline_s": t_tr_ref,
         "speedup": t_tr_ref / t_tr, "target": ">= 20x", "max_rel_diff": rel(tr, tr_ref),
         "peak_rss_mb": rss_small, "baseline_peak_rss_mb": rss_tr_ref},
        {"measurement": "ntk_max_eig (Lanczos)", "candidate_s": t_eig, "baseline_s": None,
         "speedup": None, "target": "", "max_rel_diff": None, "peak_rss_mb": rss_small,
         "baseline_peak_rss_mb": None},
        {"measurement": "analyze (no Hessian)", "candidate_s": t_an, "baseline_s": None,
         "speedup": None, "target": "< 3 s", "max_rel_diff": None, "peak_rss_mb": rss_small,
         "baseline_peak_rss_mb": None},
    ]
    df = pd.DataFrame(rows)
    df.attrs["rss_at_start_mb"] = rss0
    return df

