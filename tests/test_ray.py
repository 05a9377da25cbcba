"""The Ray executor, against a real local Ray instance (2 CPUs, no dashboard)."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

import bnstruct as bn
from bnstruct.errors import ExecutionFailed
from bnstruct.executors import LocalExecutor, RayExecutor, execute

ray = pytest.importorskip("ray")

SMALL = ["--task", "composite", "--n-train", "32", "--n-test", "16", "--width", "4",
         "--steps", "40", "--log-every", "10", "--device", "cpu"]
VOLATILE = ["path", "seconds", "created"]


@pytest.fixture(scope="module")
def hook():
    """A local Ray instance shared by this module's tests."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    yield
    ray.shutdown()


def _task_pids():
    """Pids of Ray workers running a bnstruct task now (Ray titles a worker process
    ``ray::<task>`` while it runs one)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as fh:
                    if fh.read().startswith(b"ray::_train_task"):
                        pids.append(int(d))
            except OSError:
                continue
    return pids


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    base = dict(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                model=bn.ModelSpec("mlp", 4, 2), stages=bn.default_recipe(steps=40),
                log_every=10, checkpoint_every=10, device="cpu")
    base.update(kw)
    return bn.RunConfig(**base)


def _grid():
    return [_cfg(seed=s, model=bn.ModelSpec("mlp", 4, d)) for d in (2, 3) for s in range(2)]


def _same_history(a, b):
    """Equal history rows (bit for bit) apart from the wall-clock ``seconds`` column."""
    ha, hb = (pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (a, b))
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)


def _rows(store):
    return bn.runs(store).drop(columns=VOLATILE).reset_index(drop=True)


def test_ray_equals_local(hook, tmp_path):
    cfgs = _grid()
    local = execute(cfgs, tmp_path / "local", executor=LocalExecutor(workers=1))
    seen = []
    remote = execute(cfgs, tmp_path / "ray", executor=RayExecutor(), progress=seen.append)
    assert len(seen) == 4 and [r.config for r in remote] == cfgs
    for a, b in zip(local, remote, strict=True):
        assert sorted(p.name for p in a.path.iterdir()) == sorted(
            p.name for p in b.path.iterdir())
        for f in ("weights.safetensors", "config.json"):
            assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f
        _same_history(a.path, b.path)
    pd.testing.assert_frame_equal(_rows(tmp_path / "local"), _rows(tmp_path / "ray"))
    assert not list((tmp_path / "ray").glob(".*"))[1:]  # only .locks, empty
    assert not list((tmp_path / "ray" / ".locks").iterdir())


def test_failing_task_is_reported_and_the_others_finish(hook, tmp_path):
    good = _grid()[:2]
    bad = _cfg(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32),
                                              ("k", 99))))  # the builder rejects it
    with pytest.raises(ExecutionFailed) as ei:
        execute([*good, bad], tmp_path, executor=RayExecutor())
    assert list(ei.value.errors) == [bad.default_name()]
    assert set(ei.value.runs) == {c.default_name() for c in good}
    assert sorted(bn.runs(tmp_path)["name"]) == sorted(c.default_name() for c in good)


def test_killed_worker_is_retried(hook, tmp_path):
    """SIGKILL the Ray worker running a batch: Ray retries the task, and the runs equal the
    local executor's bit for bit."""
    if not os.path.isdir("/proc"):
        pytest.skip("finds the worker through /proc")
    killed = []

    def killer():
        for _ in range(1200):
            pids = _task_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.05)

    cfgs = [_cfg(seed=s, stages=bn.default_recipe(steps=20000), log_every=1000,
                 checkpoint_every=None) for s in range(2)]  # a few seconds: time to kill it
    t = threading.Thread(target=killer)
    t.start()
    runs = execute(cfgs, tmp_path, executor=RayExecutor())
    t.join()
    assert killed
    idx = bn.runs(tmp_path)
    assert len(idx) == 2 and idx["name"].is_unique
    for r in runs:
        assert r.status == "completed"
        bn.load_run(r.path)  # loadable
    local = execute(cfgs, tmp_path / "again")
    for a, b in zip(local, runs, strict=True):
        assert (a.path / "weights.safetensors").read_bytes() == (
            b.path / "weights.safetensors").read_bytes()


def test_driver_sigint_then_rerun(hook, tmp_path):
    """SIGINT to a Ray sweep driver once a batch is back: exit 130, the runs already back are
    written, the rest are cancelled; the same command trains only what is missing and
    leaves the written runs as they are."""
    address = ray.get_runtime_context().gcs_address
    store = tmp_path / "s"
    small = [*SMALL[:-4], "--device", "cpu"]  # the steps are set below
    cmd = [sys.executable, "-m", "bnstruct.cli", "sweep", *small, "--steps", "20000",
           "--log-every", "1000", "--depth", "2,3,4", "--seed", "0,1", "--out", str(store),
           "--executor", "ray", "--address", address]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):
            if list(store.glob("*/summary.json")):
                break
            assert p.poll() is None, p.communicate()
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err
    before = {d.parent.name: d.stat().st_mtime_ns for d in store.glob("*/weights.safetensors")}
    n = len(before)
    assert n in (2, 4) and len(bn.runs(store)) == n  # whole batches (two seeds each)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"6 run(s): {n} in the store, {6 - n} to train" in r.stderr
    after = {d.parent.name: d.stat().st_mtime_ns for d in store.glob("*/weights.safetensors")}
    assert len(after) == 6 and all(after[k] == t for k, t in before.items())
    assert len(bn.runs(store)) == 6 and all(
        json.loads((store / k / "summary.json").read_text())["status"] == "completed"
        for k in after)


def test_without_ray_one_line_exit_2(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from bnstruct.cli import main\n"
            f"sys.exit(main(['sweep', *{SMALL!r}, '--out', {str(tmp_path)!r}, "
            "'--executor', 'ray']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: the Ray executor needs Ray: pip install "
                                "'bnstruct[ray]'")
