"""Batched training equals training alone; batched groups resume after a kill."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import bnstruct as bn
from bnstruct.testing import assert_close
from bnstruct.training import train_batched

TASK = bn.tasks.composite(n_train=64, n_test=32, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is as fast, and much faster on a shared, loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def net(seed, dtype=torch.float64):
    return bn.MLP(TASK.d_in, 16, 4, TASK.d_out, seed=seed, dtype=dtype)


def adam_stages(lr, lam):
    """500 steps: fit, penalty on with minibatches, settle (as the default recipe)."""
    return [bn.Stage("adam", lr, 0.0, 100), bn.Stage("adam", lr, lam, 200, batch_size=16),
            bn.Stage("adam", lr / 3, lam, 200)]


# seed, lr, lam: differing in one batch
MEMBERS = [(0, 1e-3, 0.0), (1, 2e-3, 0.01), (2, 5e-4, 0.05), (3, 1e-3, 0.002)]


def rel_diff(a, b):
    """max |a - b| / max |b| over all parameters (0 for equal networks)."""
    num = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(),
                                                          strict=True))
    den = max(q.abs().max().item() for q in b.parameters())
    return num / den


def _both(dtype):
    batch = [net(s, dtype) for s, _, _ in MEMBERS]
    res = train_batched(batch, TASK, [adam_stages(lr, lam) for _, lr, lam in MEMBERS],
                        [s for s, _, _ in MEMBERS], log_every=50)
    alone, res_alone = [], []
    for s, lr, lam in MEMBERS:
        m = net(s, dtype)
        res_alone.append(bn.train(m, TASK, adam_stages(lr, lam), seed=s, log_every=50,
                                  progress=False))
        alone.append(m)
    return batch, res, alone, res_alone


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_equals_alone_bit_for_bit(dtype):
    """Members with their own seed, lr and lam (minibatches in one stage) equal their alone
    runs bit for bit: weights and every history column but the wall clock."""
    batch, res, alone, res_alone = _both(dtype)
    for (s, _, _), m, r, a, ra in zip(MEMBERS, batch, res, alone, res_alone, strict=True):
        assert r.status == ra.status == "completed" and r.steps == ra.steps == 500
        for p, q in zip(m.parameters(), a.parameters(), strict=True):
            assert torch.equal(p, q), f"seed {s} final weights"
        cols = [c for c in bn.training.HISTORY_COLUMNS if c != "seconds"]
        pd.testing.assert_frame_equal(r.history[cols], ra.history[cols], check_exact=True)
    # guard: the members really differ (another seed/lam/lr gives other weights)
    assert rel_diff(batch[0], batch[1]) > 0.1 and rel_diff(batch[1], batch[3]) > 0.01


class Wrapped(torch.nn.Module):
    """A bnstruct MLP inside a plain module: trained through autograd (ModuleBatch)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_the_engine_equals_autograd_training_float64():
    """The engine (stacked kernel, hand-written backward, per-member coefficients) against an
    independent reference: the same network trained through autograd and the stage's
    optimizer as PyTorch ships it, float64, 500 steps with minibatches: 1e-10."""
    for s, lr, lam in MEMBERS[:2]:
        m = net(s)
        bn.train(m, TASK, adam_stages(lr, lam), seed=s, log_every=50, progress=False)
        ref = Wrapped(net(s))
        bn.train(ref, TASK, adam_stages(lr, lam), seed=s, log_every=50, progress=False)
        for p, q in zip(m.parameters(), ref.parameters(), strict=True):
            assert_close(p, q, rtol=1e-10, atol=1e-10 * q.abs().max().item(),
                         what=f"seed {s}: engine vs autograd")


def test_a_diverging_member_is_recorded_and_the_others_go_on():
    """GD, one member's learning rate makes it diverge: it is recorded as it would be alone
    (status, exact diverged_at, last row) and leaves the batch; the others equal their
    alone runs bit for bit."""
    members = [(0, 0.05, 0.01), (1, 1e3, 0.0), (2, 0.02, 0.001)]
    stages = [[bn.Stage("gd", lr, lam, 500)] for _, lr, lam in members]
    batch = [net(s) for s, _, _ in members]
    res = train_batched(batch, TASK, stages, [s for s, _, _ in members], log_every=10)
    for (s, lr, _), st, m, r in zip(members, stages, batch, res, strict=True):
        a = net(s)
        ra = bn.train(a, TASK, st, seed=s, log_every=10, progress=False)
        assert (r.status, r.steps, r.diverged_at) == (ra.status, ra.steps, ra.diverged_at)
        assert list(r.history.step) == list(ra.history.step)
        if lr == 1e3:
            assert r.status == "diverged" and 0 < r.diverged_at < 500 and r.steps < 500
            assert not math.isfinite(r.final["objective"])
        else:
            assert r.status == "completed"
            for p, q in zip(m.parameters(), a.parameters(), strict=True):
                assert torch.equal(p, q), f"member {s} weights"


@pytest.mark.parametrize("kind", ["mlp", "bottleneck", "linear", "per-network data"])
def test_hand_written_gradient_equals_autograd(kind):
    """StackedNet.loss_and_grad (the backward pass written out, into preallocated buffers)
    against autograd on each network alone, float64: the loss and every gradient entry."""
    B, n = 3, 24
    g = torch.Generator().manual_seed(0)
    X = torch.randn(B, n, TASK.d_in, generator=g, dtype=torch.float64)
    Y = torch.randn(B, n, TASK.d_out, generator=g, dtype=torch.float64)
    if kind == "linear":
        models = [bn.DeepLinear(TASK.d_in, 8, 4, TASK.d_out, seed=s, dtype=torch.float64)
                  for s in range(B)]
    else:
        width = (16, 1, 16) if kind == "bottleneck" else 16
        models = [bn.MLP(TASK.d_in, width, 4, TASK.d_out, seed=s, dtype=torch.float64)
                  for s in range(B)]
    shared = kind != "per-network data"
    stacked = bn.training.StackedNet(models)
    loss = torch.empty(B, dtype=torch.float64)
    for _ in range(2):  # the second call reuses the buffers
        stacked.loss_and_grad(X[0] if shared else X, Y[0] if shared else Y, loss)
    grads = stacked.blocks(stacked.flat.grad)
    for b, m in enumerate(models):
        xb, yb = (X[0], Y[0]) if shared else (X[b], Y[b])
        ref = (m(xb) - yb).pow(2).sum() / n
        ref_g = torch.autograd.grad(ref, list(m.parameters()))
        assert_close(loss[b], ref, rtol=1e-12, atol=0, what=f"loss of network {b}")
        for k, (got, want) in enumerate(zip(grads, ref_g, strict=True)):
            assert_close(got[b], want, rtol=1e-11, atol=1e-13 * want.abs().max().item(),
                         what=f"network {b} gradient {k}")
        assert float(ref_g[0].abs().max()) > 0


@pytest.mark.parametrize("opt", ["adam", "gd"])
def test_shared_lr_and_lam_give_the_same_bits_as_alone(opt):
    """Seeds differ, lr and lam are shared: the batch's members equal their alone runs bit
    for bit (one arithmetic: the coefficients are always per-member tensors)."""
    lr = 1e-3 if opt == "adam" else 0.05
    stages = [bn.Stage(opt, lr, 0.0, 100), bn.Stage(opt, lr, 0.01, 200)]
    batch = [net(s) for s in range(3)]
    res = train_batched(batch, TASK, [stages] * 3, [0, 1, 2], log_every=50)
    for s, (m, r) in enumerate(zip(batch, res, strict=True)):
        a = net(s)
        ra = bn.train(a, TASK, stages, seed=s, log_every=50, progress=False)
        assert r.status == ra.status == "completed"
        for p, q in zip(m.parameters(), a.parameters(), strict=True):
            assert torch.equal(p, q), f"seed {s} weights"
    assert rel_diff(batch[0], batch[1]) > 0.1


def test_after_the_odd_member_diverges_the_rest_go_on_bit_for_bit():
    """GD, one member with its own (too large) learning rate: it diverges and leaves the
    batch; the others still equal their alone runs bit for bit."""
    members = [(0, 0.05), (1, 1e3), (2, 0.05)]
    stages = [[bn.Stage("gd", lr, 0.01, 300)] for _, lr in members]
    batch = [net(s) for s, _ in members]
    res = train_batched(batch, TASK, stages, [s for s, _ in members], log_every=10)
    assert [r.status for r in res] == ["completed", "diverged", "completed"]
    for (s, lr), st, m in zip(members, stages, batch, strict=True):
        if lr == 1e3:
            continue
        a = net(s)
        bn.train(a, TASK, st, seed=s, log_every=10, progress=False)
        for p, q in zip(m.parameters(), a.parameters(), strict=True):
            assert torch.equal(p, q), f"member {s} weights"


def test_batch_needs_one_shape_and_structure():
    with pytest.raises(bn.ConfigError, match="layer sizes"):
        train_batched([net(0), bn.MLP(TASK.d_in, 8, 4, TASK.d_out, seed=1,
                                      dtype=torch.float64)],
                      TASK, [adam_stages(1e-3, 0)] * 2, [0, 1])
    with pytest.raises(bn.ConfigError, match="stage structure"):
        train_batched([net(0), net(1)], TASK,
                      [adam_stages(1e-3, 0), [bn.Stage("adam", 1e-3, 0, 500)]], [0, 1])


def test_a_batch_writes_normal_run_directories(tmp_path):
    cfgs = [bn.RunConfig(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                         model=bn.ModelSpec("mlp", 8, 3), stages=bn.default_recipe(
                             lam=lam, steps=60), seed=s, log_every=20, checkpoint_every=20,
                         device="cpu", dtype="float64")
            for s, lam in ((0, 0.005), (1, 0.01))]
    from bnstruct.executors import LocalExecutor, execute

    runs = execute(cfgs, tmp_path, executor=LocalExecutor(workers=1))
    for c, r in zip(cfgs, runs, strict=True):
        assert sorted(p.name for p in r.path.iterdir()) == [
            "config.json", "history.csv", "summary.json", "weights.safetensors"]
        back = bn.load_run(r.path)
        assert back.config == c and back.status == "completed"
        alone = bn.run(c, tmp_path / "alone", progress=False)
        assert ((r.path / "weights.safetensors").read_bytes()
                == (alone.path / "weights.safetensors").read_bytes())
    assert len(bn.runs(tmp_path)) == 2


def test_killed_batched_group_resumes(tmp_path):
    """SIGKILL a ``bnstruct sweep`` training one batch, run it again: the group resumes from
    its checkpoints and ends where an uninterrupted sweep ends."""
    args = ["sweep", "--task", "composite", "--n-train", "64", "--n-test", "16", "--depth",
            "3", "--width", "16", "--seed", "0-2", "--stage", "adam:1e-3:0.001:3000",
            "--log-every", "100", "--checkpoint-every", "100", "--dtype", "float64",
            "--device", "cpu"]
    cmd = [sys.executable, "-c", "import sys; from bnstruct.cli import main; "
           "sys.exit(main(sys.argv[1:]))"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store = tmp_path / "s"
    proc = subprocess.Popen([*cmd, *args, "--out", str(store)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    ref = subprocess.Popen([*cmd, *args, "--out", str(tmp_path / "ref")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=env)
    deadline = time.monotonic() + 300
    while len(list(store.glob("*/checkpoint.safetensors"))) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    steps = [json.loads(p.read_text())["step"] for p in store.glob("*/checkpoint.json")]
    assert len(steps) == 3 and all(0 < s < 3000 for s in steps)
    assert not list(store.glob("*/summary.json"))  # killed: nothing finished
    done = subprocess.run([*cmd, *args, "--out", str(store)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert "3 ran" in done.stdout
    _, ref_err = ref.communicate(timeout=600)
    assert ref.returncode == 0, ref_err
    got, want = bn.runs(store), bn.runs(tmp_path / "ref")
    assert list(got.status) == ["completed"] * 3 and list(got.name) == list(want.name)
    for name in got.name:
        a, b = bn.load_run(store / name), bn.load_run(tmp_path / "ref" / name)
        assert list(a.history.step) == list(b.history.step)
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert_close(p, q, rtol=1e-12, atol=1e-14, what=f"{name} resumed vs uninterrupted")
