import json
import os
import sqlite3

import numpy as np
import pytest
import torch

import bnstruct as bn
from bnstruct.cli import main

QUICK = ["--task", "composite", "--n-train", "32", "--n-test", "16", "--depth", "3",
         "--width", "8", "--steps", "60", "--quiet", "--log-every", "20"]


def cfg(**kw):
    base = dict(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                model=bn.ModelSpec("mlp", 8, 3), stages=bn.default_recipe(steps=60),
                log_every=20, checkpoint_every=20, device="cpu")
    base.update(kw)
    return bn.RunConfig(**base)


def test_run_round_trip_and_index(tmp_path):
    r = bn.run(cfg(), tmp_path, progress=False)
    files = sorted(p.name for p in r.path.iterdir())
    assert files == ["config.json", "history.csv", "summary.json", "weights.safetensors"]
    back = bn.load_run(r.path)
    assert back.config == r.config and back.status == "completed"
    for p, q in zip(back.model.parameters(), r.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(back.task.X, r.task.X.to(back.task.X.dtype))
    assert list(back.history.step) == [0, 10, 20, 35, 40, 60]  # every 20 and stage ends
    # the store index has the run with its config columns and final metrics
    bn.run(cfg(seed=1), tmp_path, progress=False)
    df = bn.runs(tmp_path)
    assert len(df) == 2 and set(df.seed) == {0, 1}
    one = bn.runs(tmp_path, where="seed = 1 AND depth = 3")
    assert len(one) == 1 and one.status.iloc[0] == "completed"
    assert one.param_norm2.iloc[0] == pytest.approx(
        json.loads((tmp_path / one.name.iloc[0] / "summary.json").read_text())
        ["final"]["param_norm2"], rel=1e-12)
    con = sqlite3.connect(tmp_path / "index.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    with pytest.raises(bn.BnstructError, match="where"):
        bn.runs(tmp_path, where="no_such_column > 1")


def test_existing_run_needs_resume_and_resume_reuses(tmp_path):
    r = bn.run(cfg(), tmp_path, progress=False)
    with pytest.raises(bn.RunExistsError, match="--resume"):
        bn.run(cfg(), tmp_path, progress=False)
    mtime = os.path.getmtime(r.path / "weights.safetensors")
    again = bn.run(cfg(), tmp_path, resume=True, progress=False)
    assert os.path.getmtime(again.path / "weights.safetensors") == mtime  # no retraining
    with pytest.raises(bn.RunExistsError, match="different configuration"):
        bn.run(cfg(seed=5), tmp_path, name=r.path.name, resume=True, progress=False)


def test_config_is_strict():
    d = cfg().to_dict()
    assert bn.RunConfig.from_dict(json.loads(json.dumps(d))) == cfg()
    d["modle"] = d.pop("model")
    with pytest.raises(bn.ConfigError, match="modle"):
        bn.RunConfig.from_dict(d)
    d = cfg().to_dict()
    d["stages"][0]["lrr"] = 1
    with pytest.raises(bn.ConfigError, match="lrr"):
        bn.RunConfig.from_dict(d)


def test_cli_train_and_runs(tmp_path, capsys):
    assert main(["train", *QUICK, "--out", str(tmp_path)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("completed:") and "param_norm2" in line
    assert main(["runs", str(tmp_path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["depth"] == 3 and rows[0]["status"] == "completed"
    assert main(["runs", str(tmp_path), "--format", "csv", "--columns", "name,depth"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "name,depth"
    # an existing run is refused without --resume, reused with it
    assert main(["train", *QUICK, "--out", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", *QUICK, "--out", str(tmp_path), "--resume"]) == 0


def test_cli_data_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    np.savez(tmp_path / "d.npz", X=X, Y=np.sin(X[:, :1]))
    args = ["train", "--data", str(tmp_path / "d.npz"), "--depth", "2", "--width", "4",
            "--steps", "30", "--quiet", "--out", str(tmp_path / "s")]
    assert main(args) == 0
    run_dir = next(p for p in (tmp_path / "s").iterdir() if (p / "config.json").exists())
    assert (run_dir / "data.safetensors").exists()
    back = bn.load_run(run_dir)
    assert back.task.n_train == 32 and back.task.d_in == 3


BAD = [
    (["--task", "nope"], "unknown task"),
    (["--depth", "0"], "--depth"),
    (["--width", "0"], "width"),
    (["--width", "8,8,8"], "depth-1"),
    (["--steps", "0"], "--steps"),
    (["--lam", "-1"], "--lam"),
    (["--lr", "-0.1"], "--lr"),
    (["--width", "a,b"], "--width"),
    (["--task", "symmetry", "--k", "3"], "no option"),
    (["--stage", "adam:1e-3"], "OPT:LR:LAM:STEPS"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--dtype", "f16"], ""),
]


@pytest.mark.parametrize(("args", "msg"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_cli_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, args, msg):
    out = tmp_path / "store"
    assert main(["train", *QUICK, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and msg in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def _npz(tmp_path, **arrays):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize(("arrays", "msg"), [
    (dict(X=np.array([[np.nan, 1.0]] * 5), Y=np.zeros(5)), "NaN or inf"),
    (dict(X=np.array([[np.inf, 1.0]] * 5), Y=np.zeros(5)), "NaN or inf"),
    (dict(X=np.zeros((5, 2)), Y=np.zeros(4)), "rows"),
    (dict(X=np.zeros((5, 2))), "lacks"),
])
def test_cli_bad_data(tmp_path, capsys, arrays, msg):
    out = tmp_path / "store"
    p = _npz(tmp_path, **arrays)
    assert main(["train", "--data", str(p), "--steps", "10", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_cli_unwritable_out(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert main(["train", *QUICK, "--out", str(ro / "store")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_cli_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", *QUICK, "--out", str(f)]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_diverged_run_is_recorded(tmp_path, capsys):
    assert main(["train", *QUICK[:-2], "--stage", "gd:1000:0:200", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("diverged:")
    df = bn.runs(tmp_path)
    assert df.status.tolist() == ["diverged"]
    summary_text = (tmp_path / df.name.iloc[0] / "summary.json").read_text()

    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    summary = json.loads(summary_text, parse_constant=refuse)  # strict: no NaN / Infinity
    assert summary["status"] == "diverged" and "non-finite" in summary["reason"]
    assert summary["final"]["objective"] is None  # non-finite, written as null
    assert 0 < summary["diverged_at"] <= summary["step"]
    json.loads((tmp_path / df.name.iloc[0] / "config.json").read_text(), parse_constant=refuse)
    # a reused diverged run is reported, not re-trained
    assert main(["train", *QUICK[:-2], "--stage", "gd:1000:0:200", "--out", str(tmp_path),
                 "--resume"]) == 0
    assert capsys.readouterr().out.startswith("diverged:")


def test_sigint_exits_130_and_resumes(tmp_path):
    """A real Ctrl-C (SIGINT) during ``bnstruct train``: exit 130, status interrupted, and
    --resume finishes with the weights of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    steps = 3000
    args = ["train", "--task", "composite", "--n-train", "64", "--n-test", "16", "--depth",
            "3", "--width", "16", "--stage", f"adam:1e-3:0.001:{steps}", "--log-every", "100",
            "--checkpoint-every", "100", "--quiet", "--device", "cpu"]
    cmd = [sys.executable, "-c", "import sys; from bnstruct.cli import main; "
           "sys.exit(main(sys.argv[1:]))"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every process
    store = tmp_path / "s"
    proc = subprocess.Popen([*cmd, *args, "--out", str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    ref = subprocess.Popen([*cmd, *args, "--out", str(tmp_path / "ref")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=env)
    deadline = time.monotonic() + 300
    while not list(store.glob("*/checkpoint.safetensors")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (out, err)
    run_dir = next(p for p in store.iterdir() if (p / "config.json").exists())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["step"] < steps
    assert "--resume" in err and "Traceback" not in err
    assert bn.runs(store).status.tolist() == ["interrupted"]
    done = subprocess.run([*cmd, *args, "--out", str(store), "--resume"], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert not (run_dir / "checkpoint.safetensors").exists()
    _, ref_err = ref.communicate(timeout=600)
    assert ref.returncode == 0, ref_err
    ref_dir = next(p for p in (tmp_path / "ref").iterdir() if (p / "config.json").exists())
    a = load_file(str(run_dir / "weights.safetensors"))
    b = load_file(str(ref_dir / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
