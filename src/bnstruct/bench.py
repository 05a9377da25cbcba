"""Benchmarks measured as ratios against a baseline run in the same process.

Machines here are noisy, so absolute times are not evidence: every benchmark interleaves the
candidate and its baseline over several rounds and reports the best time of each, their ratio,
and the achieved GFLOP/s next to the machine's measured matmul rate (the floor of the work is
FLOPs / matmul rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from .config import RunConfig
    from .tasks import Task
    from .training import StackedNet, Stage

__all__ = ["matmul_rate", "time_interleaved", "mlp_step_flops", "bench_train", "bench_sweep",
           "bench_ntk", "bench_analyze", "estimate_training", "reproduce_configs", "load_report"]


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
    df = pd.DataFrame([{"variant": k, "ms_per_step": t * 1e3, "speedup": base / t,
                        "gflops": flops / t / 1e9, "matmul_gflops": rate,
                        "floor_ms": flops / (rate * 1e9) * 1e3}
                       for k, t in best.items()])
    df.attrs["load"] = load_report()
    return df


def bench_sweep(*, batch: int = 8, depth: int = 12, width: int = 64, n: int = 256,
                depths: tuple[int, ...] = (8, 10, 12, 14, 16, 20), seeds: int = 3,
                steps: int = 600, repeats: int = 20, rounds: int = 5, sweep_rounds: int = 2,
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
      another (target >= 2.5x), with the workers' forkserver running (as in every call but
      the first of a process); best of ``sweep_rounds`` interleaved rounds of each (the speed
      of a shared machine drifts over minutes: one-by-one times of 29-47 s were measured
      here within ten minutes);
    - the first executor call of the process, which also starts the forkserver (a fixed cost
      of a few seconds: it imports torch once), against the same baseline;
    - ``workers``: one single-thread worker per core vs one worker with every core as threads
      (the measurement behind :func:`bnstruct.executors.worker_plan`'s rule, which also
      leaves out cores that other work keeps busy).
    """
    import tempfile

    from .config import ModelSpec, RunConfig
    from .executors import available_cores, busy_cores, execute, worker_plan
    from .models import MLP
    from .store import run
    from .tasks import TaskSpec, composite
    from .training import (
        StackedNet,
        Stage,
        batched_step,
        default_recipe,
        make_optimizer,
        stage_coeffs,
        step,
    )

    task = composite(n_train=n, seed=0).to(dtype=dtype)
    X, Y = task.X, task.Y
    model = MLP(task.d_in, width, depth, task.d_out, seed=0, dtype=dtype)
    opt = make_optimizer(Stage("adam", 1e-3, 0.01, 1), model.parameters())
    losses = torch.empty(100, dtype=dtype)
    nets = [MLP(task.d_in, width, depth, task.d_out, seed=s, dtype=dtype) for s in range(batch)]
    # a sweep's batch: seeds differ, lr and lam per network (the general, per-network path)
    stages = [Stage("adam", 1e-3 * (1 + s / batch), 0.01 * (1 + s), 1) for s in range(batch)]
    net = StackedNet(nets)
    coeffs = stage_coeffs(stages, net)
    bopt = make_optimizer(stages[0], [net.flat], lr=coeffs.lr, weight_decay=coeffs.weight_decay)
    blosses = torch.empty(100, batch, dtype=dtype)
    count = [0]

    def single() -> None:
        step(model, opt, X, Y, losses, count[0] % 100)
        count[0] += 1

    def batched() -> None:
        batched_step(net, bopt, X, Y, blosses, count[0] % 100, coeffs)
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

    w, th = worker_plan(len(depths))
    busy = busy_cores()
    t_first = timed(lambda d: execute(configs, d))  # starts the workers' forkserver
    ones, execs = [], []
    for _ in range(sweep_rounds):  # interleaved, best of each: this machine's speed drifts
        ones.append(timed(lambda d: [run(c, d, progress=False) for c in configs]))
        execs.append(timed(lambda d: execute(configs, d)))
    t_one, t_exec = min(ones), min(execs)
    t_2x1 = timed(lambda d: execute(configs, d, workers=cores, threads=1))
    t_1x2 = timed(lambda d: execute(configs, d, workers=1, threads=cores))
    what = f"sweep {len(depths)} depths x {seeds} seeds, {steps} steps"
    rows.append({"measurement": f"{what} (executor, its plan {w}x{th} with {busy or 0:.1f} "
                                "cores busy elsewhere, vs one by one)",
                 "candidate_s": t_exec, "baseline_s": t_one, "speedup": t_one / t_exec,
                 "target": ">= 2.5x"})
    rows.append({"measurement": f"{what}, the first executor call of this process (it also "
                                "starts the workers' forkserver: "
                                f"{t_first - t_exec:+.1f} s against the best later call)",
                 "candidate_s": t_first, "baseline_s": t_one, "speedup": t_one / t_first,
                 "target": "reported"})
    rows.append({"measurement": f"workers: {cores} worker(s) x 1 thread vs 1 x {cores}",
                 "candidate_s": t_2x1, "baseline_s": t_1x2, "speedup": t_1x2 / t_2x1,
                 "target": "the rule's evidence"})
    df = pd.DataFrame(rows)
    df.attrs["load"] = load_report()
    return df


def load_report() -> str:
    """The machine's load now, for a benchmark's title: cores busy with other work (a
    ``/proc/stat`` reading) and the 1-minute load average (speed ratios are measured in one
    process, but a busy machine still bends them)."""
    import os

    from .executors import available_cores, busy_cores

    busy = busy_cores(0.2)
    try:
        la = f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):  # pragma: no cover - no load average
        la = "n/a"
    b = "n/a" if busy is None else f"{busy:.1f}"
    return f"{b} of {available_cores()} cores busy elsewhere, load average {la}"


def reproduce_configs(mode: str = "quick", only: Sequence[str] | None = None
                      ) -> list[RunConfig]:
    """The distinct training runs ``bnstruct reproduce`` plans in ``mode`` (every experiment,
    or ``only`` those), in plan order."""
    from .experiments import EXPERIMENTS, get_config

    names = list(only) if only else list(EXPERIMENTS)
    unique: dict[str, RunConfig] = {}
    for name in names:
        for c in EXPERIMENTS[name].plan(get_config(name, mode)):
            unique.setdefault(c.default_name(), c)
    return list(unique.values())


def _step_seconds(net: StackedNet, task: Task, stages: Sequence[Stage], seeds: Sequence[int],
                  si: int, sample_steps: int) -> float:
    """Process CPU seconds of one batched step of stage ``si`` (``stages[b]`` of network
    ``b``), the mean of ``sample_steps`` after 3 warm-up steps."""
    from .training import batched_step, make_optimizer, minibatch, stage_coeffs

    coeffs = stage_coeffs(stages, net)
    opt = make_optimizer(stages[0], [net.flat], lr=coeffs.lr, weight_decay=coeffs.weight_decay)
    bs, N = stages[0].batch_size, task.n_train
    losses = torch.empty(3, net.size, dtype=net.flat.dtype)

    def one(i: int) -> None:
        if bs is None or bs >= N:
            xb, yb = task.X, task.Y
        else:
            idx = torch.stack([minibatch(s, si, i, bs, N) for s in seeds])
            xb, yb = task.X[idx], task.Y[idx]
        batched_step(net, opt, xb, yb, losses, i % 3, coeffs)

    for i in range(3):
        one(i)
    t = time.process_time()
    for i in range(sample_steps):
        one(i)
    return (time.process_time() - t) / sample_steps


def estimate_training(configs: Sequence[RunConfig], *, sample_steps: int = 20,
                      workers: int | None = None) -> pd.DataFrame:
    """Core-seconds the executor would spend training ``configs`` into an empty store,
    estimated in seconds instead of minutes: each batch of
    :func:`bnstruct.executors.plan_batches` is built and ``sample_steps`` of its batched steps
    are timed per stage (process CPU time, one thread, as a worker runs them), times the
    stage's steps, plus one history evaluation per ``log_every`` steps.

    Returns one row per batch (in the executor's order, longest first by
    :func:`~bnstruct.executors.batch_cost`) with its networks, shape, steps, measured
    ``ms_per_step`` and ``core_seconds``; ``df.attrs`` holds ``core_seconds`` (the sum),
    ``workers`` and ``makespan_s`` (the batches handed, in that order, to the first free of
    ``workers`` single-thread workers; default: the cores), the wall time of training on an
    otherwise idle machine, excluding process start-up."""
    import tempfile

    from .executors import available_cores, batch_cost, plan_batches, simulate_schedule
    from .training import StackedNet
    from .training._batched import _evaluate

    with tempfile.TemporaryDirectory() as d:
        batches = plan_batches(list(configs), d)
    batches.sort(key=batch_cost, reverse=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for batch in batches:
            c0 = batch[0]
            task = c0.task.build()
            dtype = getattr(torch, c0.dtype)
            task = task.to(dtype=dtype)
            models = [c.model.build(task.d_in, task.d_out, seed=c.seed, dtype=dtype,
                                    device=torch.device("cpu")) for c in batch]
            net = StackedNet(models)
            B = len(batch)
            seconds = sum(_step_seconds(net, task, [c.stages[si] for c in batch],
                                        [c.seed for c in batch], si, sample_steps)
                          * stage.steps for si, stage in enumerate(c0.stages))
            steps = sum(stage.steps for stage in c0.stages)
            t = time.process_time()
            _evaluate(net, task, [0.0] * B)
            seconds += (time.process_time() - t) * (steps // c0.log_every + 1)
            m = c0.model
            rows.append({"task": c0.task.name, "model": m.kind, "depth": m.depth,
                         "width": m.width if isinstance(m.width, int) else "/".join(
                             str(w) for w in m.width),
                         "networks": B, "steps": steps,
                         "ms_per_step": seconds / steps * 1e3, "core_seconds": seconds})
    finally:
        torch.set_num_threads(before)
    df = pd.DataFrame(rows)
    w = workers or available_cores()
    df.attrs.update(core_seconds=float(df.core_seconds.sum()) if rows else 0.0, workers=w,
                    makespan_s=simulate_schedule(list(df.core_seconds) if rows else [], w),
                    load=load_report())
    return df


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


def bench_analyze(*, depth: int = 12, width: int = 64, n: int = 256, d_out: int = 20,
                  repeats: int = 1, rounds: int = 5, warmup: int = 1) -> pd.DataFrame:
    """Time :func:`bnstruct.analyze` against the public functions called one by one.

    Network: :class:`bnstruct.MLP` ``(20, width, depth, d_out)`` (He init, seed 0), float32
    like a trained run, analyzed in float64 on ``n`` standard Gaussian points (seed 0).
    Baseline: what a user writes to get the same numbers without ``analyze``:
    :func:`~bnstruct.weight_spectra` (and their effective ranks),
    :func:`~bnstruct.representations` (the SVD of each centered representation, its
    effective and numerical ranks, and the top two principal directions of a middle layer:
    analyze's ``pca``), :func:`~bnstruct.jacobian` (its SVDs for the ranks),
    :func:`~bnstruct.conventions.bottleneck_rank`,
    :func:`~bnstruct.log_pdet`, :func:`~bnstruct.bottleneck_bound` at ``k``,
    :func:`~bnstruct.ntk` trace, :func:`~bnstruct.ntk_max_eig`, :func:`~bnstruct.balancedness`
    and :func:`~bnstruct.param_norm2`. Candidate: ``analyze(model, X, k)`` (NTK included, no
    Hessian), which builds every column from one cached evaluation. Both run in the same
    process, interleaved (:func:`time_interleaved`, best of ``rounds``). Returns one row per
    variant with seconds per call, the speedup over the baseline and ``vs_floor``, the ratio
    to the floor (:func:`_analysis_floor`: the kernels analyze cannot skip, run bare, timed in
    the same rounds; the target is analyze <= 1.2x the floor); ``df.attrs`` holds the check
    that both give the same NTK top eigenvalue and bound, ``floor_s``, ``analyze_vs_floor``
    and ``hvp`` (:func:`bench_hvp`: both Hessian-vector products on this net).
    """
    from .conventions import bottleneck_rank, center, effective_rank, numerical_rank
    from .diagnostics import (
        analyze,
        bottleneck_bound,
        jacobian,
        log_pdet,
        ntk,
        ntk_max_eig,
        representations,
        weight_spectra,
    )
    from .models import MLP, balancedness, param_norm2

    k = 2
    methods = ("entropy", "participation", "threshold")
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 20, generator=g)
    model = MLP(20, width, depth, d_out, seed=0)
    got: dict[str, object] = {}

    eps = torch.finfo(torch.float32).eps

    def by_hand() -> None:
        ws = weight_spectra(model)
        w_ranks = [[effective_rank(s, m) for m in methods] for s in ws]
        reps = representations(model, X)
        rs = [torch.linalg.svdvals(center(A)) for A in reps]
        r_ranks = [[effective_rank(s, m) for m in methods]
                   + [numerical_rank(s, tuple(A.shape), eps)]
                   for s, A in zip(rs, reps, strict=True)]
        C = center(reps[depth // 2 - 1])  # the PCA of a middle layer, as analyze gives
        pca = C @ torch.linalg.svd(C, full_matrices=False)[2][:2].T
        J = jacobian(model, X)
        sJ = torch.linalg.svdvals(J)
        j_rank = int((sJ > sJ[:, :1] * max(J.shape[1:]) * 2.0**-52).sum(1).max())
        k_est = bottleneck_rank(ws, jacobian_rank=j_rank)
        lp = log_pdet(J, k)
        bound = bottleneck_bound(model, X, k)
        tr = ntk(model, X, mode="trace")
        lmax = ntk_max_eig(model, X)
        bal = balancedness(model)
        norm2 = param_norm2(model)
        got["by_hand"] = (lmax, float(bound["slack"].min()), w_ranks, r_ranks, pca, k_est, lp,
                          tr, bal, norm2)

    def one_call() -> None:
        a = analyze(model, X, k)
        got["analyze"] = (a.summary["ntk_max_eig"], a.summary["bound_slack_min"])

    floor = _analysis_floor(model, X)
    names: dict[str, Callable[[], object]] = {"public functions one by one": by_hand,
                                              "analyze": one_call, "floor": floor}
    best = time_interleaved(names, repeats=repeats, rounds=rounds, warmup=warmup)
    base, bare = best["public functions one by one"], best.pop("floor")
    df = pd.DataFrame([{"variant": k_, "s_per_call": t, "speedup": base / t,
                        "vs_floor": t / bare} for k_, t in best.items()])
    df.attrs["floor_s"] = bare
    hand, one = got["by_hand"], got["analyze"]
    assert isinstance(hand, tuple) and isinstance(one, tuple)
    df.attrs["ntk_max_eig_rel_diff"] = abs(hand[0] - one[0]) / abs(hand[0])
    df.attrs["bound_slack_min_diff"] = abs(hand[1] - one[1])
    df.attrs["setup"] = (f"MLP L={depth} width={width} d_in=20 d_out={d_out}, N={n}, k={k}, "
                         f"float64, {torch.get_num_threads()} threads")
    df.attrs["analyze_vs_floor"] = best["analyze"] / bare
    df.attrs["floor"] = ("the kernels analyze cannot skip, run bare: cast, forward, one "
                         "backward sweep, the SVDs, the NTK Lanczos (bench._analysis_floor)")
    df.attrs["hvp"] = bench_hvp(model, X)
    return df


def _analysis_floor(model: nn.Module, X: torch.Tensor) -> Callable[[], object]:
    """The kernels :func:`bnstruct.analyze` cannot skip, run bare: the chain cast to float64,
    one forward pass, one backward sweep of the factors ``G_l`` (the Jacobian and the NTK
    trace), the SVDs (weights, centered representations, per-point Jacobians, the PCA) and
    the Lanczos top eigenvalue of the NTK on structured NTK-vector products. Everything else
    analyze does (ranks, tables, the bound, the summary) is its overhead over this floor."""
    from .conventions import center
    from .diagnostics._chain import backward_factors, forward, parse_chain
    from .diagnostics._chain_evaluation import chain_ntk_matvec
    from .diagnostics._evaluation import svdvals, svdvals_list
    from .diagnostics._lanczos import top_eig

    def run() -> object:
        chain = parse_chain(model, torch.float64)
        X64 = X.to(torch.float64)
        with torch.no_grad():
            fw = forward(chain, X64)
            tr = torch.zeros(X64.shape[0], dtype=torch.float64)
            G = None
            for l, G in backward_factors(chain, fw):
                tr += (fw.a[l - 1].pow(2).sum(1) + 1) * G.pow(2).sum((1, 2))
            assert G is not None
            J = G @ chain.weights[0]
            reps = [*fw.a[1:], fw.out]
            [torch.linalg.svdvals(W) for W in chain.weights]
            svdvals_list([center(A) for A in reps])
            svdvals(J)
            torch.linalg.svd(center(reps[len(reps) // 2]), full_matrices=False)
            N, d = fw.out.shape
            mv = chain_ntk_matvec(chain, fw)
            return top_eig(lambda v: mv(v.reshape(N, d)).reshape(-1), N * d,
                           dtype=torch.float64, device=X64.device, tol=1e-10, seed=0)
    return run


def bench_hvp(model: nn.Module, X: torch.Tensor, *, rounds: int = 5,
              repeats: int = 5) -> dict[str, Any]:
    """Seconds per Hessian-vector product of the regularized objective (float64, ``Y`` a
    fixed random target, ``lam = 0.01``) by forward-over-reverse and by reverse-over-reverse
    (:func:`bnstruct.diagnostics._evaluation.hvp_function`), interleaved, with their largest
    relative difference, the faster one and the one :data:`~bnstruct.diagnostics.HVP_METHODS`
    uses on this device."""
    from .diagnostics import Evaluation
    from .diagnostics._evaluation import hvp_function, hvp_method

    ev = Evaluation(model, X)
    g = torch.Generator().manual_seed(1)
    Y = torch.randn(X.shape[0], ev.d_out, generator=g, dtype=torch.float64)
    fn, theta0 = ev.functional.objective(ev.X, ev.check_Y(Y), 0.01)
    v = torch.randn(theta0.numel(), generator=g, dtype=torch.float64)
    prods = {m: hvp_function(fn, theta0, m) for m in ("forward-over-reverse",
                                                       "reverse-over-reverse")}
    calls: dict[str, Callable[[], object]] = {m: partial(h, v) for m, h in prods.items()}
    best = time_interleaved(calls, repeats=repeats, rounds=rounds, warmup=2)
    a, b = (prods[m](v) for m in prods)
    return {"seconds_per_product": best, "max_rel_diff": float((a - b).abs().max()
                                                                / a.abs().max()),
            "faster": min(best, key=lambda m: best[m]), "used": hvp_method(ev.device),
            "n_params": theta0.numel()}


def residual_cnn(width: int = 32, hidden: int = 768, n_classes: int = 10,
                 seed: int = 0) -> nn.Module:
    """The ~1M-parameter residual CNN of :func:`bench_analyze_general` (``[N, 1, 8, 8]``
    inputs): a 3x3 stem, a residual stage at 8x8, max-pooling, a wider residual stage at
    4x4, then a dense head (most of the parameters)."""

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1)
            self.act = nn.ReLU()
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)
            self.out = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(x + self.conv2(self.act(self.conv1(x))))

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), Block(width), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), Block(2 * width),
        nn.Flatten(), nn.Linear(2 * width * 16, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def bench_analyze_general(*, n: int = 512, dtype: torch.dtype = torch.float64,
                          jacobian_points: int = 64) -> pd.DataFrame:
    """Wall time and peak memory of each measurement of :func:`bnstruct.analyze` on a general
    model: :func:`residual_cnn` (about 1M parameters) on the first ``n`` scikit-learn 8x8
    digits (scaled to [0, 1]), computed in ``dtype``.

    Rows: the forward pass with its representations, the input Jacobian, the input-to-layer
    Jacobian ranks (``jacobian_points`` points), the NTK trace (per-point gradient norms, one
    backward pass per output, never ``N d_out x P``; for this model done in the input
    Jacobian's backward passes, so its own row is near zero), the NTK top eigenvalue (Lanczos on
    NTK-vector products),
    and the whole ``analyze`` (a fresh evaluation, no full NTK). ``extra_rss_mb``: growth of
    the process's peak RSS during that step (a bound on its extra memory). The issue's target:
    analyze <= 30 s on 2 cores, < 2 GB extra memory.
    """
    from sklearn.datasets import load_digits

    from .diagnostics import Evaluation, analyze

    X = torch.from_numpy(load_digits().data[:n] / 16.0).reshape(-1, 1, 8, 8).float()
    model = residual_cnn()
    n_params = sum(p.numel() for p in model.parameters())
    ev = Evaluation(model, X, dtype=dtype)
    rows = []

    def step(name: str, f: Callable[[], object]) -> None:
        r0 = _peak_rss_mb()
        t = time.perf_counter()
        f()
        rows.append({"measurement": name, "seconds": time.perf_counter() - t,
                     "extra_rss_mb": _peak_rss_mb() - r0})

    step("forward + representations", lambda: ev.rep_spectra)
    step("input Jacobian [N, 10, 64]", lambda: ev.jacobian_svals)
    step(f"layer Jacobian ranks ({jacobian_points} points)",
         lambda: ev.layer_jacobian_ranks(jacobian_points))
    step("NTK trace (per-point gradient norms)", lambda: ev.ntk("trace"))
    step("NTK top eigenvalue (Lanczos, J(J^T v))", lambda: ev.ntk_max_eig())
    step("analyze (fresh, NTK trace and top eigenvalue, no full NTK)",
         lambda: analyze(model, X, dtype=dtype, jacobian_points=jacobian_points))
    df = pd.DataFrame(rows)
    df.attrs["setup"] = (f"residual CNN, {n_params} parameters, N={n} digits 1x8x8, "
                         f"{str(dtype).replace('torch.', '')}, {torch.get_num_threads()} "
                         "threads")
    return df
