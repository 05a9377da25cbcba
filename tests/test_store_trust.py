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
    """A crash after the run directory is made but before the first step (here the model
    build fails) leaves only config.json; the same call again trains, without resume."""
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
    assert sorted(p.name for p in d.iterdir()) == ["config.json"]
    monkeypatch.setattr(group, "train_members", real)
    r = bn.run(cfg, tmp_path, progress=False)  # no resume needed
    assert r.status == "completed"
    with pytest.raises(bn.RunExistsError, match="already exists"):  # a real run still blocks
        bn.run(cfg, tmp_path, progress=False)
