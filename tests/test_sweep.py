"""``bnstruct sweep``, grids and the executor."""

import os

import pytest

import bnstruct as bn
from bnstruct.cli import main
from bnstruct.executors import LocalExecutor, execute, plan_batches, worker_plan
from bnstruct.sweep import grid, parse_values

SMALL = ["--task", "composite", "--n-train", "32", "--n-test", "16", "--width", "4",
         "--steps", "30", "--log-every", "10", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_parse_values():
    assert parse_values("seed", "0-4") == [0, 1, 2, 3, 4]
    assert parse_values("seed", "7") == [7]
    assert parse_values("lam", "0.005,1e-2") == [0.005, 0.01]  # 1e-2 is not a range
    assert parse_values("depth", [8, 12]) == [8, 12]
    assert parse_values("width", "64,32x32x16") == [64, (32, 32, 16)]
    for name, v, msg in (("seed", "3-1", "empty range"), ("depth", "2,x", "not an integer"),
                         ("seed", "1,1", "repeated"), ("lam", "a", "not a number"),
                         ("depth", 2.5, "not an integer"), ("nope", "1", "unknown")):
        with pytest.raises(bn.ConfigError, match=msg):
            parse_values(name, v)


def test_grid_points_are_train_configs():
    pts = grid({"depth": "2,3", "seed": "0-1", "lam": 0.01, "steps": 30})
    assert [(p.values["depth"], p.values["seed"]) for p in pts] == [(2, 0), (2, 1), (3, 0),
                                                                      (3, 1)]
    from bnstruct.sweep import config_from

    cfg, _ = config_from(depth=3, seed=1, lam=0.01, steps=30)
    assert pts[3].config == cfg  # a sweep point names the same run as bnstruct train


def test_cli_sweep_grid_then_reuse(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", *SMALL, "--depth", "2,3", "--seed", "0-1", "--lam", "0.01,0.02",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8 ran, 0 reused, 0 diverged" in text
    df = bn.runs(out)
    assert len(df) == 8 and set(df.status) == {"completed"}
    assert sorted(set(df.depth)) == [2, 3] and sorted(set(df.seed)) == [0, 1]
    assert sorted(set(df.lam)) == [0.01, 0.02]
    mtimes = {p: os.path.getmtime(p) for p in out.glob("*/weights.safetensors")}
    # the same grid again: everything is reused, nothing retrained
    assert main(["sweep", *SMALL, "--depth", "2,3", "--seed", "0-1", "--lam", "0.01,0.02",
                 "--out", str(out)]) == 0
    assert "0 ran, 8 reused" in capsys.readouterr().out
    assert mtimes == {p: os.path.getmtime(p) for p in out.glob("*/weights.safetensors")}
    # a larger grid trains only the new points; bnstruct train reuses a sweep's run
    assert main(["sweep", *SMALL, "--depth", "2,3", "--seed", "0-2", "--lam", "0.01",
                 "--workers", "1", "--out", str(out)]) == 0
    assert "2 ran, 4 reused" in capsys.readouterr().out
    assert main(["train", *SMALL, "--depth", "3", "--seed", "2", "--lam", "0.01", "--quiet",
                 "--out", str(out), "--resume"]) == 0
    assert len(bn.runs(out)) == 10


def test_cli_sweep_from_a_toml_spec(tmp_path, capsys):
    spec = tmp_path / "grid.toml"
    spec.write_text('[sweep]\ntask = "composite"\nn_train = 32\nn_test = 16\nwidth = 4\n'
                    'depth = [2, 3]\nseed = "0-1"\nsteps = 500\nlog_every = 10\n'
                    'device = "cpu"\n')
    out = tmp_path / "s"
    assert main(["sweep", "--spec", str(spec), "--steps", "30", "--out", str(out)]) == 0
    assert "4 ran" in capsys.readouterr().out
    df = bn.runs(out)
    assert list(df.steps) == [30] * 4  # the flag overrides the file
    assert main(["sweep", *SMALL, "--depth", "2,3", "--seed", "0-1", "--out", str(out)]) == 0
    assert "0 ran, 4 reused" in capsys.readouterr().out  # the same runs as from flags


BAD = [
    (["--seed", "3-1"], "empty range"),
    (["--depth", "2,x"], "--depth"),
    (["--lam", "-1,0.1"], "--lam"),
    (["--task", "composite,nope"], "unknown task"),
    (["--task", "symmetry", "--k", "3"], "no option"),
    (["--stage", "adam:1e-3:0:10", "--lam", "0.1,0.2"], "--stage"),
    (["--width", "4x4", "--depth", "4"], "depth-1"),
    (["--workers", "0"], "--workers"),
    (["--dtype", "float16"], "--dtype"),
]


@pytest.mark.parametrize(("args", "msg"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_cli_sweep_bad_spec_exit_2_nothing_trained(tmp_path, capsys, args, msg):
    out = tmp_path / "s"
    assert main(["sweep", *SMALL, "--depth", "2", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and msg in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_sweep_bad_spec_file(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text("depht = [2, 3]\n")
    assert main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "depht" in err and len(err.strip().splitlines()) == 1
    spec.write_text("depth = [2, 3\n")
    assert main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "s")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def _cfg(**kw):
    base = dict(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                model=bn.ModelSpec("mlp", 4, 2), stages=bn.default_recipe(steps=30),
                log_every=10, checkpoint_every=10, device="cpu")
    base.update(kw)
    return bn.RunConfig(**base)


def test_plan_batches_groups_what_can_share_a_step(tmp_path):
    a = [_cfg(seed=s) for s in range(5)]
    b = [_cfg(seed=0, stages=bn.default_recipe(lam=0.02, steps=30, lr=1e-3))]  # other lam/lr
    c = [_cfg(model=bn.ModelSpec("mlp", 4, 3))]  # other depth
    d = [_cfg(stages=bn.default_recipe(steps=60))]  # other stage structure
    batches = plan_batches(a + b + c + d, tmp_path, max_batch=4)
    assert [len(x) for x in batches] == [4, 2, 1, 1]
    assert batches[1] == a[4:] + b


def test_worker_plan_rule(monkeypatch):
    from bnstruct.executors import _plan as executors

    def readings(*pairs):  # successive (busy, total) /proc/stat readings
        it = iter(pairs)
        monkeypatch.setattr(executors, "_cpu_times", lambda cpus: next(it))

    monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(executors.os, "getloadavg", lambda: (9.0, 0.0, 0.0))  # stale, unused
    readings((0, 0), (60, 100))  # 60% of 2 cores busy: 1.2 cores
    assert executors.free_cores(2, interval=0) == 1  # one core busy elsewhere
    readings((0, 0), (5, 100))
    assert executors.free_cores(2, interval=0) == 2  # idle now, whatever the load average
    readings((0, 0), (100, 100))
    assert executors.free_cores(2, interval=0) == 1  # all busy: still one
    readings(None)  # no /proc/stat (not Linux): the load average stands in
    assert executors.free_cores(2, interval=0) == 1
    monkeypatch.setattr(executors.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    readings(None)
    assert executors.free_cores(2, interval=0) == 2
    assert worker_plan(6, cores=2) == (2, 1)  # a worker per core while there are batches
    assert worker_plan(1, cores=2) == (1, 2)  # one batch: its worker gets both cores
    assert worker_plan(0, cores=2) == (1, 2)
    assert worker_plan(6, workers=1, cores=2) == (1, 2)
    assert worker_plan(6, workers=4, cores=2) == (4, 1)
    assert worker_plan(3, cores=8) == (3, 2)


def test_schedule_and_cost_put_the_longest_batches_first():
    from bnstruct.executors import batch_cost, simulate_schedule

    assert simulate_schedule([5, 3, 2], 2) == 5  # 5 | 3+2
    assert simulate_schedule([5, 3, 2, 2], 2) == 7  # then 2 on the first free: 5+2 | 3+2
    assert simulate_schedule([5, 3, 2, 2], 1) == 12
    assert simulate_schedule([], 2) == 0
    deep = [_cfg(seed=s, model=bn.ModelSpec("mlp", 8, 6)) for s in range(3)]
    shallow = [_cfg(seed=s, model=bn.ModelSpec("mlp", 8, 3)) for s in range(3)]
    assert batch_cost(deep) > batch_cost(shallow) > batch_cost(shallow[:1]) > 0
    # per-layer overhead: one network is more than a third of three
    assert batch_cost(deep[:1]) > batch_cost(deep) / 3


def test_cli_bench_plan_estimates_reproduce_training(capsys):
    import json

    assert main(["bench", "plan", "--only", "linear", "--sample-steps", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "quick" and len(out["rows"]) == 3  # three depths, one run each
    assert out["core_seconds"] == pytest.approx(sum(r["core_seconds"] for r in out["rows"]))
    assert 0 < out["makespan_s"] <= out["core_seconds"] + 1e-9
    assert all(r["steps"] == 9000 and r["ms_per_step"] > 0 for r in out["rows"])
    assert main(["bench", "plan", "--only", "nope"]) == 2


def test_cli_bench_sweep_rows(capsys):
    """``bench sweep`` at toy sizes: every row a positive time pair whose ratio is their
    quotient; a bad option is one line and exit 2."""
    import json

    assert main(["bench", "sweep", "--batch", "2", "--depth", "3", "--width", "4", "--n", "16",
                 "--seeds", "1", "--steps", "6", "--rounds", "1", "--sweep-rounds", "1",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["target"] for r in rows] == [">= 1.8x", ">= 1.5x", ">= 1.35x", ">= 2.5x",
                                           "reported", "the rule's evidence"]
    for r in rows:
        assert r["candidate_s"] > 0 and r["baseline_s"] > 0
        assert r["speedup"] == pytest.approx(r["baseline_s"] / r["candidate_s"])
    assert main(["bench", "sweep", "--sweep-rounds", "0"]) == 2
    assert "--sweep-rounds must be >= 1" in capsys.readouterr().err


def test_busy_cores_reads_proc_stat():
    from bnstruct.executors import _plan as executors

    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat")
    busy = executors.busy_cores(0.05)
    assert busy is not None and 0.0 <= busy <= len(os.sched_getaffinity(0)) + 1e-9
    assert 1 <= executors.free_cores(interval=0.05) <= executors.available_cores()


def test_execute_order_duplicates_reuse_and_workers(tmp_path):
    cfgs = [_cfg(seed=1), _cfg(seed=0, model=bn.ModelSpec("mlp", 4, 3)), _cfg(seed=0),
            _cfg(seed=1)]
    seen = []
    runs = execute(cfgs, tmp_path, progress=seen.append,
                   executor=LocalExecutor(workers=2))  # two batches, two workers
    assert [r.config for r in runs] == cfgs
    assert runs[0].path == runs[3].path and len(seen) == 3
    assert all(r.status == "completed" for r in runs)
    for c, r in zip(cfgs, runs, strict=True):
        alone = bn.run(c, tmp_path / "alone", progress=False, resume=True)
        assert ((alone.path / "weights.safetensors").read_bytes()
                == (r.path / "weights.safetensors").read_bytes())
    seen.clear()
    again = execute(cfgs, tmp_path, progress=seen.append)
    assert [r.path for r in again] == [r.path for r in runs] and len(seen) == 3


def _ctrl_c_when(cmd, ready, *, group=True):
    """Run ``cmd`` and, once ``ready()`` holds, press Ctrl-C at a terminal (SIGINT to its
    process group) or, with ``group=False``, send SIGINT to its process alone (``kill -INT``);
    returns (exit code, stderr)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err


def test_ctrl_c_stops_every_local_worker_then_resumes(tmp_path):
    """A Ctrl-C at a terminal during a two-worker ``bnstruct sweep`` (this process's
    training thread and one forked worker process, one batch each): exit 130, both batches
    stop at a step boundary with a checkpoint (status interrupted); the same command resumes
    both from there, and a SIGINT to the driver alone (``kill -INT``) stops both again once
    they have gone further (the driver tells its worker): the history runs on without a gap.
    That a resumed batch ends with the weights of an uninterrupted one is
    ``test_batched.test_killed_batched_group_resumes``."""
    import json
    import sys

    steps = 200000  # far more than the test waits for: no batch finishes first
    args = ["sweep", "--task", "composite", "--n-train", "64", "--n-test", "16", "--depth",
            "3,4", "--width", "16", "--seed", "0", "--stage", f"adam:1e-3:0.001:{steps}",
            "--log-every", "100", "--checkpoint-every", "100", "--dtype", "float64",
            "--device", "cpu", "--workers", "2"]
    store = tmp_path / "s"
    cmd = [sys.executable, "-c", "import sys; from bnstruct.cli import main; "
           "sys.exit(main(sys.argv[1:]))", *args, "--out", str(store)]

    def stopped_at():
        return {p.parent.name: json.loads(p.read_text())["step"]
                for p in store.glob("*/checkpoint.json")}

    code, err = _ctrl_c_when(cmd, lambda: len(stopped_at()) == 2)
    assert code == 130, err
    first = stopped_at()
    assert all(0 < s < steps for s in first.values()), first
    for name in first:
        assert json.loads((store / name / "summary.json").read_text())["status"] == (
            "interrupted")
    code, err = _ctrl_c_when(cmd, lambda: all(
        stopped_at().get(n, 0) > s for n, s in first.items()), group=False)
    assert code == 130, err
    second = stopped_at()
    assert all(first[n] < second[n] < steps for n in first), (first, second)
    for name, s in second.items():
        run = bn.load_run(store / name)
        assert run.status == "interrupted"
        assert list(run.history.step) == list(range(0, s + 1, 100))


def test_an_error_stops_every_local_worker(tmp_path):
    """When a batch's result raises (here the progress callback), every other worker stops
    its batch at a step boundary with a checkpoint before :func:`execute` raises, including
    a worker process next to an idle one: nothing trains on after its claim is released."""
    import json

    n = 300000  # ~a minute or more: a worker that is not stopped fails the status check
    long_a, long_b, short = (_cfg(seed=0, model=bn.ModelSpec("mlp", 8, d), stages=(
        bn.Stage("adam", 1e-3, 0.001, steps),), checkpoint_every=100, log_every=100)
        for d, steps in ((4, n), (3, n), (2, 200)))

    def boom(cfg):
        raise ValueError("progress failed")

    with pytest.raises(ValueError, match="progress failed"):  # three workers: 1 thread, 2 procs
        execute([long_a, long_b, short], tmp_path, progress=boom,
                executor=LocalExecutor(workers=3, threads=1))
    for cfg in (long_a, long_b):
        d = tmp_path / cfg.default_name()
        assert json.loads((d / "summary.json").read_text())["status"] == "interrupted"
        assert 0 < json.loads((d / "checkpoint.json").read_text())["step"] < n
    locks = tmp_path / ".locks"  # every claim released
    assert not (locks.exists() and any(locks.iterdir()))


def test_the_stop_event_stops_a_worker_process_at_a_step_boundary(tmp_path):
    """The driver's stop token (its event shared with the pool's processes) stops a worker
    process's batch at a step boundary with a checkpoint; the run comes back interrupted."""
    import json
    import time
    from concurrent.futures import ProcessPoolExecutor

    from bnstruct.executors import worker_context
    from bnstruct.executors._local import _in_worker, _init_worker
    from bnstruct.store import write_result
    from bnstruct.training import StopToken

    cfg = _cfg(seed=0, model=bn.ModelSpec("mlp", 8, 3),
               stages=(bn.Stage("adam", 1e-3, 0.001, 10**6),), checkpoint_every=100,
               log_every=100)
    ck = tmp_path / cfg.default_name() / "checkpoint.json"
    ctx = worker_context()
    stop = StopToken.for_processes(ctx)
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker,
                             initargs=(1, stop.event, os.getpid())) as pool:
        f = pool.submit(_in_worker, [cfg.to_dict()], str(tmp_path))
        deadline = time.monotonic() + 120
        while not ck.exists():
            assert time.monotonic() < deadline and not f.done()
            time.sleep(0.01)
        stop.set()
        (res,) = f.result(timeout=60)
    assert res.status == "interrupted"
    run = write_result(tmp_path, res)
    assert run.status == "interrupted"
    assert 0 < json.loads(ck.read_text())["step"] < 10**6
    assert json.loads(ck.read_text())["step"] == run.summary["step"]


def test_kill_9_of_a_sweep_driver_leaves_no_worker_training(tmp_path):
    """SIGKILL a two-worker ``bnstruct sweep`` while both batches train (one in a forked
    worker process): the worker stops at its next step boundary (it checks its driver),
    the forkserver exits, and the same command then trains each run to its end once, from
    the checkpoints, with no process of the first driver alive."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from bnstruct.store import pid_alive

    steps = 40000  # seconds of training per batch: the test kills the driver well before
    args = ["sweep", "--task", "composite", "--n-train", "64", "--n-test", "16", "--depth",
            "3,4", "--width", "16", "--seed", "0", "--stage", f"adam:1e-3:0.001:{steps}",
            "--log-every", "100", "--checkpoint-every", "100", "--dtype", "float64",
            "--device", "cpu", "--workers", "2"]
    store = tmp_path / "s"
    cmd = [sys.executable, "-c", "import sys; from bnstruct.cli import main; "
           "sys.exit(main(sys.argv[1:]))", *args, "--out", str(store)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    workers = []
    while not (len(list(store.glob("*/checkpoint.json"))) == 2 and workers):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        workers = [json.loads(p.read_text())["pid"] for p in store.glob(".locks/*.lock.w*")
                   if not p.name.startswith(".")]  # (not a file being written)
        time.sleep(0.01)
    from pathlib import Path

    parents = [int(Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[1])
               for w in workers]  # the forkserver
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    gone = time.monotonic() + 30
    while any(pid_alive(p) for p in workers + parents):
        assert time.monotonic() < gone, "a process of the killed driver lives on"
        time.sleep(0.05)
    stopped = {p.parent.name: json.loads(p.read_text())["step"]
               for p in store.glob("*/checkpoint.json")}
    assert len(stopped) == 2 and all(0 < s < steps for s in stopped.values()), stopped
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 to train" in done.stderr
    for name in stopped:
        run = bn.load_run(store / name)
        assert run.status == "completed"
        assert list(run.history.step) == list(range(0, steps + 1, 100))  # resumed, no gap
    assert not list((store / ".locks").iterdir())


def test_dry_run_prints_the_plan_execute_carries_out(tmp_path, capsys):
    """``--dry-run`` shows the Plan's batches in their start order (longest first) and what
    is reused; ``execute(plan)`` then trains exactly those batches."""
    from bnstruct.executors import make_plan

    args = ["sweep", *SMALL, "--depth", "2,3", "--seed", "0-1", "--out", str(tmp_path)]
    assert main([*args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "4 run(s): 0 in the store, 4 to train in 2 batch(es)" in text
    first = text.index("batch 1 (2 network(s)):")
    assert text.index("-L3-", first) < text.index("batch 2", first) < text.index("-L2-", first)
    cfgs = [bn.load_run(r.path).config for r in execute(
        [_cfg(seed=0)], tmp_path)]  # one run in the store now
    plan = make_plan(cfgs, tmp_path)
    assert len(plan.reused) == 1 and not plan.batches
    assert main([*args, "--dry-run"]) == 0
    assert "in the store (reused):" not in capsys.readouterr().out  # not one of these four
