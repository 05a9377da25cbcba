"""Hostile inputs (issue 19's audit findings, re-run as probes): every one gets a one-line
bnstruct error (CLI: exit 2, no traceback), never a crash, a silent wrong result or a file
outside the store."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import bnstruct as bn
from bnstruct.cli import main

CFG = dict(task=bn.TaskSpec("composite", (("n_test", 8), ("n_train", 16))),
           model=bn.ModelSpec("mlp", 4, 2), stages=bn.default_recipe(steps=30), device="cpu")

API = {  # probe -> (call, the error's words)
    "MLP width '64'": (lambda: bn.MLP(20, width="64", depth=3, d_out=2), "width"),
    "MLP width 8.5": (lambda: bn.MLP(20, width=8.5, depth=3, d_out=2), "width"),
    "MLP width True": (lambda: bn.MLP(20, width=True, depth=3, d_out=2), "width"),
    "MLP width list of str": (lambda: bn.MLP(20, width=["4", "4"], depth=3, d_out=2),
                              "width"),
    "MLP depth 2.0": (lambda: bn.MLP(20, width=4, depth=2.0, d_out=2), "depth"),
    "MLP too big for memory": (lambda: bn.MLP(20, width=10**6, depth=3, d_out=2), "GiB"),
    "MLP seed 2**64": (lambda: bn.MLP(20, width=4, depth=3, d_out=2, seed=2**64), "seed"),
    "Stage lr True": (lambda: bn.Stage("adam", True, 0.0, 10), "lr"),
    "Stage lr nan": (lambda: bn.Stage("adam", float("nan"), 0.0, 10), "lr"),
    "Stage steps True": (lambda: bn.Stage("adam", 1e-3, 0.0, True), "steps"),
    "Stage lam '0.1'": (lambda: bn.Stage("adam", 1e-3, "0.1", 10), "lam"),
    "Stage batch 2.5": (lambda: bn.Stage("adam", 1e-3, 0.0, 10, 2.5), "batch_size"),
    "RunConfig seed True": (lambda: bn.RunConfig(**CFG, seed=True), "seed"),
    "RunConfig seed 2**64": (lambda: bn.RunConfig(**CFG, seed=2**64), "seed"),
    "RunConfig seed -1": (lambda: bn.RunConfig(**CFG, seed=-1), "seed"),
    "RunConfig device meta": (lambda: bn.RunConfig(**{**CFG, "device": "meta"}), "device"),
    "RunConfig log_every True": (lambda: bn.RunConfig(**CFG, log_every=True), "log_every"),
    "from_dict without a task name": (
        lambda: bn.RunConfig.from_dict({"task": {"kwargs": {}}}), "task"),
    "from_dict config null": (lambda: bn.RunConfig.from_dict(None), "config"),
    "from_arrays complex X": (lambda: bn.Task.from_arrays(np.ones((8, 2)) * 1j,
                                                           np.ones(8)), "real numbers"),
    "from_arrays string X": (lambda: bn.Task.from_arrays(np.array([["a", "b"]] * 8),
                                                          np.ones(8)), "real numbers"),
    "train with a d_in mismatch": (
        lambda: bn.train(bn.MLP(5, 4, 2, 1), bn.tasks.composite(n_train=16, seed=0),
                         [bn.Stage("adam", 1e-3, 0.0, 5)], progress=False), "inputs"),
    "run name ../escaped": (
        lambda: bn.run(bn.RunConfig(**CFG), "/tmp/bn-probe", name="../escaped",
                       progress=False), "run name"),
}


@pytest.mark.parametrize("probe", list(API))
def test_api_probe(probe):
    call, words = API[probe]
    with pytest.raises(bn.BnstructError) as e:
        call()
    msg = str(e.value)
    assert words in msg and "\n" not in msg, msg


SMALL = ["--task", "composite", "--n-train", "16", "--n-test", "8", "--depth", "2",
         "--width", "4", "--steps", "30", "--device", "cpu"]

CLI = {  # probe -> (argv after the store, the error's words)
    "train --seed 2**64": (["train", *SMALL, "--seed", str(2**64)], "seed"),
    "train --device meta": (["train", *SMALL[:-2], "--device", "meta"], "device"),
    "train --depth 3 --width 1000000": (["train", *SMALL[:-8], "--depth", "3", "--width",
                                         "1000000", "--steps", "30", "--device", "cpu"],
                                        "GiB"),
    "train --name .": (["train", *SMALL, "--name", "."], "run name"),
    "train --name ../escaped": (["train", *SMALL, "--name", "../escaped"], "run name"),
    "sweep --seed 0-1000000000 --dry-run": (["sweep", *SMALL, "--seed", "0-1000000000",
                                             "--dry-run"], "at most"),
}


@pytest.mark.parametrize("probe", list(CLI))
def test_cli_probe(probe, tmp_path, capsys):
    argv, words = CLI[probe]
    argv = [*argv, "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    store = tmp_path / "s"
    assert not store.exists() or not any(p.name.endswith(".json") for p in store.rglob("*"))
    assert not (tmp_path / "escaped").exists()


def _spec(tmp_path, data: bytes):
    p = tmp_path / "spec.toml"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("body,words", [
    (b"depth = [2, 3\n", "not valid TOML"),
    (b"\xff\xfe depth = 2\n", "not UTF-8"),
    (b"depth = true\n", "not a value"),
    (b"log_every = 'ten'\n", "log-every"),
    (b"device = 3\n", "device"),
    (b"seed = 1.5\n", "not an integer"),
])
def test_toml_probe(tmp_path, capsys, body, words):
    assert main(["sweep", "--spec", str(_spec(tmp_path, body)), "--out",
                 str(tmp_path / "s"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("body,words", [
    ("import sys\ndef make():\n    sys.exit(0)\n", "sys.exit(0)"),
    ("import sys\nsys.exit(3)\ndef make():\n    pass\n", "sys.exit(3)"),
    ("def make():\n    return 42\n", "not an nn.Module"),
    ("raise RuntimeError('boom')\n", "boom"),
])
def test_a_model_factory_that_exits_or_fails_is_an_error(tmp_path, body, words):
    (tmp_path / "probe_factory.py").write_text(body)
    np.save(tmp_path / "X.npy", np.zeros((4, 3)))
    r = subprocess.run([sys.executable, "-c", "import sys; from bnstruct.cli import main; "
                        "sys.exit(main(sys.argv[1:]))", "analyze", "--model",
                        "probe_factory:make", "--data", str(tmp_path / "X.npy")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_probe_count():
    """The closing note's table counts these."""
    assert len(API) + len(CLI) >= 29
    assert torch.get_num_threads() >= 1
