"""A store you can trust (issue 19, the parts done): a run's data is part of its identity, a
run whose stored data is gone says so, names stay inside the store, and a crash before the
first step leaves nothing that blocks the next try."""

import numpy as np
import pytest

import bnstruct as bn
from bnstruct.cli import main

ARGS = ["--depth", "2", "--width", "4", "--steps", "30", "--log-every", "10", "--quiet",
        "--device", "cpu"]


def _data(path, n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    np.savez(path, X=X, Y=np.sin(X[:, :1]))


def _only_run(store):
    (name,) = list(bn.runs(store)["name"]) if (store / "index.sqlite").exists() else [None]
    return name


def test_a_changed_data_file_is_a_new_run(tmp_path, capsys):
    d, out = tmp_path / "d.npz", tmp_path / "s"
    _data(d, 40, 0)
    assert main(["train", "--data", str(d), *ARGS, "--out", str(out)]) == 0
    first = _only_run(out)
    _data(d, 40, 1)  # other rows, same path and shape
    assert main(["train", "--data", str(d), *ARGS, "--out", str(out), "--resume"]) == 0
    names = sorted(bn.runs(out)["name"])
    assert len(names) == 2 and first in names  # trained anew, not "reused"
    assert main(["sweep", "--data", str(d), "--depth", "2", "--width", "4", "--steps", "30",
                 "--log-every", "10", "--device", "cpu", "--out", str(out)]) == 0
    assert "1 in the store, 0 to train" in capsys.readouterr().err
    spec = bn.load_run(out / first).config.task
    with pytest.raises(bn.DataError, match="has changed since this run was configured"):
        spec.build()


def test_a_run_whose_stored_data_is_gone_refuses(tmp_path, capsys):
    d, out = tmp_path / "d.npz", tmp_path / "s"
    _data(d, 32, 0)
    assert main(["train", "--data", str(d), *ARGS, "--out", str(out)]) == 0
    name = _only_run(out)
    (out / name / "data.safetensors").unlink()
    _data(d, 160, 2)
    with pytest.raises(bn.BnstructError, match="data.safetensors.* is missing"):
        bn.load_run(out / name)
    capsys.readouterr()
    assert main(["analyze", str(out / name)]) == 2
    err = capsys.readouterr().err
    assert "is missing" in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", ["../escaped", ".", "..", "a/b", "", ".hidden"])
def test_names_stay_inside_the_store(tmp_path, capsys, name):
    out = tmp_path / "s"
    assert main(["train", "--task", "composite", "--n-train", "16", "--n-test", "8", *ARGS,
                 "--out", str(out), "--name", name]) == 2
    assert "run name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (out / "config.json").exists()
    cfg = bn.RunConfig(task=bn.TaskSpec("composite", (("n_test", 8), ("n_train", 16))),
                       model=bn.ModelSpec("mlp", 4, 2), stages=bn.default_recipe(steps=30),
                       device="cpu")
    with pytest.raises(bn.ConfigError, match="run name"):
        bn.run(cfg, out, name=name, progress=False)


def test_a_crash_before_the_first_step_blocks_nothing(tmp_path, monkeypatch):
    """A crash after the run directory is made but before the first step (here the training
    call fails) leaves no directory behind; one left by an older version (only its
    config.json) is reused; the same call again trains, without resume."""
    import bnstruct.executors._group as group

    cfg = bn.RunConfig(task=bn.TaskSpec("composite", (("n_test", 8), ("n_train", 16))),
                       model=bn.ModelSpec("mlp", 4, 2), stages=bn.default_recipe(steps=30),
                       device="cpu")
    real = group.train_members

    def crash(*a, **k):
        raise MemoryError("cannot allocate")

    monkeypatch.setattr(group, "train_members", crash)
    with pytest.raises(MemoryError):
        bn.run(cfg, tmp_path, progress=False)
    d = tmp_path / cfg.default_name()
    assert not d.exists()
    d.mkdir()
    (d / "config.json").write_text(bn.store.config_record(cfg, cfg.task.build()))
    monkeypatch.setattr(group, "train_members", real)
    r = bn.run(cfg, tmp_path, progress=False)  # no resume needed
    assert r.status == "completed"
    with pytest.raises(bn.RunExistsError, match="already exists"):  # a real run still blocks
        bn.run(cfg, tmp_path, progress=False)


def _trained(tmp_path, name="r"):
    out = tmp_path / "s"
    assert main(["train", "--task", "composite", "--n-train", "16", "--n-test", "8", *ARGS,
                 "--checkpoint-every", "10", "--out", str(out), "--name", name]) == 0
    return out, out / name


def _truncate(f):
    f.write_bytes(f.read_bytes()[:50])


CORRUPTIONS = {
    "weights truncated": ("weights.safetensors", _truncate),
    "weights empty": ("weights.safetensors", lambda f: f.write_bytes(b"")),
    "summary malformed": ("summary.json", lambda f: f.write_text("{not json")),
    "config malformed": ("config.json", lambda f: f.write_text("{\"config\": ")),
    "config null": ("config.json", lambda f: f.write_text("null")),
    "config without a task name": ("config.json", lambda f: f.write_text(
        '{"config": {"task": {"kwargs": {}}}}')),
    "history missing": ("history.csv", lambda f: f.unlink()),
    "weights of another shape": ("weights.safetensors", lambda f: __import__(
        "safetensors.torch").torch.save_file({"layers.0.weight": __import__("torch").zeros(
            3, 3)}, str(f))),
}


@pytest.mark.parametrize("what", list(CORRUPTIONS))
def test_a_corrupt_run_file_is_named_in_one_line(tmp_path, capsys, what):
    out, run = _trained(tmp_path)
    fname, corrupt = CORRUPTIONS[what]
    corrupt(run / fname)
    capsys.readouterr()
    assert main(["analyze", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert fname in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    with pytest.raises(bn.BnstructError, match=fname.replace(".", r"\.")):
        bn.load_run(run)


def test_a_truncated_checkpoint_on_resume_is_named(tmp_path, capsys):
    out = tmp_path / "s"
    ck_dir = out / "r"
    ck_dir.mkdir(parents=True)
    cfg_args = ["train", "--task", "composite", "--n-train", "16", "--n-test", "8", *ARGS,
                "--out", str(out), "--name", "r"]
    from bnstruct.sweep import config_from

    cfg, _ = config_from(task="composite", n_train=16, n_test=8, depth=2, width=4, steps=30,
                         log_every=10, device="cpu")
    (ck_dir / "config.json").write_text(bn.store.config_record(cfg, cfg.task.build()))
    (ck_dir / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    capsys.readouterr()
    assert main([*cfg_args, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint.safetensors" in err and len(err.splitlines()) == 1, err


def test_a_corrupt_index_is_rebuilt_from_the_run_directories(tmp_path, capsys):
    out, run = _trained(tmp_path, "a")
    (out / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for f in ("index.sqlite-wal", "index.sqlite-shm"):
        (out / f).unlink(missing_ok=True)
    assert main(["train", "--task", "composite", "--n-train", "16", "--n-test", "8", *ARGS,
                 "--out", str(out), "--name", "b"]) == 0  # trains, then indexes: no crash
    assert sorted(bn.runs(out)["name"]) == ["a", "b"]  # rebuilt, and the new run indexed
    (out / "index.sqlite").write_bytes(b"garbage" * 100)
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0 and "a" in capsys.readouterr().out


def test_a_read_only_store_can_be_listed_and_analyzed(tmp_path):
    """The store on a read-only bind mount (in a private mount namespace, as root) or with
    its write bits removed (as a user): ``runs`` lists it and ``analyze`` reads a run."""
    import os
    import shutil
    import stat
    import subprocess
    import sys

    out, run = _trained(tmp_path)
    check = ("import sys, bnstruct as bn; from bnstruct.cli import main\n"
             "assert list(bn.runs(sys.argv[1])['name']) == ['r']\n"
             "sys.exit(main(['analyze', sys.argv[1] + '/r']))")
    if os.geteuid() != 0:
        for p in [out, *out.rglob("*")]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            r = subprocess.run([sys.executable, "-c", check, str(out)], capture_output=True,
                               text=True, timeout=300)
        finally:
            for p in [out, *out.rglob("*")]:
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
    else:
        if shutil.which("unshare") is None:
            pytest.skip("root without unshare: no way to make the store read-only")
        ro = tmp_path / "ro"
        ro.mkdir()
        script = (f"mount --bind {out} {ro} && mount -o remount,bind,ro {ro} && "
                  f"! touch {ro}/probe 2>/dev/null && {sys.executable} -c \"$0\" {ro}")
        r = subprocess.run(["unshare", "-m", "sh", "-c", script, check], capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0 and "mount" in r.stderr and "permission" in r.stderr.lower():
            pytest.skip(f"no read-only mount here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr[-2000:]
