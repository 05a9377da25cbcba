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

__all__ = ["matmul_rate", "time_interleaved", "bench_train", "mlp_step_flops"]


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
    penalty ``lam * sum(p.pow(2).sum())`` summed in Python and backpropagated. Candidate: the
    exact step :func:`bnstruct.train` runs (same objective, the penalty as coupled weight decay
    in the optimizer, including its per-step divergence check). Both on the default
    ``composite`` task. Returns one row per variant with ms/step, speedup over the baseline,
    GFLOP/s, the matmul rate and the floor (FLOPs / matmul rate).
    """
    from .models import MLP
    from .tasks import composite
    from .training import Stage, _make_optimizer

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
    opt = _make_optimizer(Stage("adam", lr, lam, 1), list(model.parameters()))

    def bn_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(X), Y, reduction="sum") / n
        loss.item()
        loss.backward()
        opt.step()

    best = time_interleaved({"user loop (nn.Sequential + Adam + Python penalty)": user_step,
                             "bnstruct.train step": bn_step}, repeats=repeats, rounds=rounds)
    flops = mlp_step_flops(model.sizes, n)
    rate = matmul_rate(dtype=dtype)
    base = best["user loop (nn.Sequential + Adam + Python penalty)"]
    return pd.DataFrame([{"variant": k, "ms_per_step": t * 1e3, "speedup": base / t,
                          "gflops": flops / t / 1e9, "matmul_gflops": rate,
                          "floor_ms": flops / (rate * 1e9) * 1e3}
                         for k, t in best.items()])
