"""The store under concurrency: train in memory then store, run claims, two drivers."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import bnstruct as bn
from bnstruct.executors import LocalExecutor, execute, train_group
from bnstruct.store import (
    RunBusyError,
    claim,
    claimed_by,
    release,
    wait_for,
    write_result,
)

ONE = LocalExecutor(workers=1)

VOLATILE = ["path", "seconds", "created"]  # differ between two trainings of one config


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    base = dict(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                model=bn.ModelSpec("mlp", 4, 2), stages=bn.default_recipe(steps=30),
                log_every=10, checkpoint_every=10, device="cpu")
    base.update(kw)
    return bn.RunConfig(**base)


def _same_dirs(a, b):
    """Run directories ``a`` and ``b`` hold the same files; weights and history equal bit
    for bit; config and summary equal apart from timestamps, seconds and versions."""
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    assert (a / "weights.safetensors").read_bytes() == (b / "weights.safetensors").read_bytes()
    _same_history(a, b)
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (a, b))
    assert ca == cb
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for s in (sa, sb):
        for k in ("seconds", "created", "finished"):
            s.pop(k)
        s["final"].pop("seconds", None)
    assert sa == sb


def _same_history(a, b):
    """Equal history rows (bit for bit) apart from the wall-clock ``seconds`` column."""
    ha, hb = (pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (a, b))
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)


def _rows(store):
    return bn.runs(store).drop(columns=VOLATILE).reset_index(drop=True)


def test_train_group_then_write_equals_the_local_executor(tmp_path):
    cfgs = [_cfg(seed=s) for s in range(3)]
    local = execute(cfgs, tmp_path / "a", executor=ONE)
    results = train_group(cfgs)
    assert [r.name for r in results] == [c.default_name() for c in cfgs]
    stored = [write_result(tmp_path / "b", r) for r in results]
    for x, y in zip(local, stored, strict=True):
        _same_dirs(x.path, y.path)
        assert y.status == "completed"
    pd.testing.assert_frame_equal(_rows(tmp_path / "a"), _rows(tmp_path / "b"))
    assert not list((tmp_path / "b").glob(".*.tmp"))  # no temporary directory left


def test_one_config_through_the_seam(tmp_path):
    """A batch of one through the seam equals the local executor and bn.run bit for bit,
    with the same files."""
    cfg = _cfg(seed=4)
    (res,) = train_group([cfg])
    r = write_result(tmp_path / "b", res)
    _same_dirs(execute([cfg], tmp_path / "a", executor=ONE)[0].path, r.path)
    alone = bn.run(cfg, tmp_path / "c", progress=False)
    _same_dirs(alone.path, r.path)


def test_write_result_completes_an_interrupted_directory(tmp_path):
    cfg = _cfg(seed=2)
    (res,) = train_group([cfg])
    half = tmp_path / cfg.default_name()
    half.mkdir(parents=True)
    (half / "config.json").write_text(res.config_json)
    (half / "checkpoint.safetensors").write_bytes(b"stale")
    r = write_result(tmp_path, res)
    assert r.status == "completed" and not (half / "checkpoint.safetensors").exists()
    assert (half / "weights.safetensors").read_bytes() == res.weights
    assert len(bn.runs(tmp_path)) == 1


def test_claims(tmp_path):
    assert claim(tmp_path, "r")
    assert not claim(tmp_path, "r")  # held by this live process
    assert claimed_by(tmp_path, "r") == f"pid {os.getpid()} on {socket.gethostname()}"
    release(tmp_path, "r")
    assert claimed_by(tmp_path, "r") is None
    # a claim by a dead process of this host is stale: taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock = tmp_path / ".locks" / "r.lock"
    lock.write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    assert wait_for(tmp_path, ["r"]) == ["r"]  # abandoned, unfinished
    assert claim(tmp_path, "r")
    release(tmp_path, "r")
    # a live holder on another host is respected
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert not claim(tmp_path, "r")
    assert claimed_by(tmp_path, "r") == "pid 1 on elsewhere"


def test_run_busy_says_so_and_waits(tmp_path):
    cfg = _cfg(seed=5)
    name = cfg.default_name()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from bnstruct.store import claim
        assert claim({str(tmp_path)!r}, {name!r})
        print("held", flush=True)
        time.sleep(float(sys.argv[1]))
        """), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusyError, match="being trained by another process"):
            bn.run(cfg, tmp_path, progress=False)
        r = bn.run(cfg, tmp_path, progress=False, wait=True)  # holder exits unfinished: ours
        assert r.status == "completed"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


DRIVER = textwrap.dedent("""
    import sys
    import torch
    import bnstruct as bn
    from bnstruct.executors import execute
    import bnstruct.store as st
    import bnstruct.executors._local as local
    from bnstruct.executors import LocalExecutor

    torch.set_num_threads(1)
    trained = []
    real = local.train_claimed
    def counting(configs, store, stop):
        trained.extend(c.default_name() for c in configs if not st.finished(
            st.Path(store) / c.default_name()))
        return real(configs, store, stop)
    local.train_claimed = counting
    cfgs = [bn.RunConfig(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                         model=bn.ModelSpec("mlp", 4, d), stages=bn.default_recipe(steps=60),
                         log_every=20, checkpoint_every=20, device="cpu", seed=s)
            for d in (2, 3, 4) for s in range(2)]
    runs = execute(cfgs, sys.argv[1], executor=LocalExecutor(workers=1, max_batch=1))
    assert all(r.status == "completed" for r in runs)
    print(" ".join(trained))
""")


def test_two_drivers_on_one_store(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    trained = [n for o in outs for n in o[0].split()]
    assert len(trained) == len(set(trained)) == 6  # each run trained exactly once
    idx = bn.runs(tmp_path)
    assert len(idx) == 6 and idx["name"].is_unique and set(idx["name"]) == set(trained)
    assert not list((tmp_path / ".locks").glob("*.lock"))
    # the same sweep again trains nothing
    runs = execute([bn.load_run(p).config for p in idx["path"]], tmp_path)
    assert len(runs) == 6


def test_a_finished_but_unindexed_run_is_indexed_when_reused(tmp_path):
    """A writer killed between renaming a run into place and indexing it leaves a finished,
    unindexed run: the executor reuses it (no retraining) and indexes it."""
    import sqlite3

    cfg = _cfg(seed=4)
    (r,) = execute([cfg], tmp_path)
    weights = (r.path / "weights.safetensors").read_bytes()
    con = sqlite3.connect(tmp_path / "index.sqlite")
    con.execute("DELETE FROM runs")
    con.commit()
    con.close()
    assert len(bn.runs(tmp_path)) == 0
    (again,) = execute([cfg], tmp_path)
    assert (again.path / "weights.safetensors").read_bytes() == weights  # reused
    rows = bn.runs(tmp_path)
    assert list(rows["name"]) == [cfg.default_name()] and rows["status"][0] == "completed"


def test_write_result_holds_ctrl_c_until_the_run_is_indexed(tmp_path):
    """A SIGINT while a result is written is delivered after the directory and its index row
    are both in place (as KeyboardInterrupt to the default handler)."""
    import signal

    import bnstruct.store as store

    (res,) = train_group([_cfg(seed=5)])
    real = store._register

    def register_after_ctrl_c(root, row):
        signal.raise_signal(signal.SIGINT)  # arrives between the rename and the index row
        real(root, row)

    store._register = register_after_ctrl_c
    try:
        with pytest.raises(KeyboardInterrupt):
            write_result(tmp_path, res)
    finally:
        store._register = real
    assert list(bn.runs(tmp_path)["name"]) == [res.name]
    assert (tmp_path / res.name / "summary.json").exists()
