"""``bnstruct analyze --model pkg.module:factory --weights ... --data X.npy`` (issue 13)."""

import json
import sys

import numpy as np
import pytest
import torch

import bnstruct as bn
from bnstruct.cli import main

MODULE = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.l1, self.act, self.l2 = nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)

    def forward(self, x):
        return x + self.l2(self.act(self.l1(x)))


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.GELU(), Block(8), Block(8), nn.Linear(8, 3))


def make_other():
    return nn.Sequential(nn.Linear(5, 9), nn.GELU(), nn.Linear(9, 3))


def broken():
    raise ValueError("no GPU here")
'''


@pytest.fixture()
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "bn_user_models_cli.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "bn_user_models_cli", raising=False)
    sys.path.insert(0, str(tmp_path))
    import bn_user_models_cli as mod

    m = mod.make()
    from safetensors.torch import save_file

    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(m.state_dict(), tmp_path / "w.pt")
    torch.save({"model": m}, tmp_path / "pickled.pt")  # a whole pickled module: refused
    np.save(tmp_path / "X.npy", np.random.default_rng(0).standard_normal((40, 5))
            .astype(np.float32))
    np.save(tmp_path / "X_bad.npy", np.zeros((40, 4), dtype=np.float32))
    yield tmp_path, m
    sys.path.remove(str(tmp_path))
    sys.modules.pop("bn_user_models_cli", None)


def _reject(name):
    raise ValueError(name)


def test_analyze_user_model_table_json_csv(user_dir, capsys):
    tmp, m = user_dir
    base = ["analyze", "--model", "bn_user_models_cli:make", "--data", "X.npy"]
    assert main([*base, "--weights", "w.safetensors"]) == 0
    text = capsys.readouterr().out
    assert "representations" in text and "2.act" in text
    assert any(m in text for m in bn.conventions.BOTTLENECK_RANK_METHODS)
    lines = text.splitlines()
    tables = lines[:[line.strip().startswith("summary") for line in lines].index(True)]
    assert max(len(line) for line in tables) <= 100  # the two tables fit 100 columns
    assert main([*base, "--weights", "w.safetensors", "--json"]) == 0
    d = json.loads(capsys.readouterr().out, parse_constant=_reject)
    assert main([*base, "--weights", "w.pt", "--json"]) == 0
    d2 = json.loads(capsys.readouterr().out, parse_constant=_reject)
    assert d["summary"]["model_spec"] == "bn_user_models_cli:make"
    assert d["layers"] == d2["layers"] and d["representations"] == d2["representations"]
    X = torch.from_numpy(np.load(tmp / "X.npy"))
    expected = bn.analyze(m, X)
    assert d["summary"]["ntk_max_eig"] == pytest.approx(expected.summary["ntk_max_eig"],
                                                        rel=1e-12)
    assert main([*base, "--weights", "w.pt", "--layers", "2,3.act", "--csv"]) == 0
    out = capsys.readouterr().out
    assert "2.act" not in out and "3.act" in out
    assert main([*base, "--weights", "w.safetensors", "--plot", "fig.png"]) == 0
    assert (tmp / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("extra, msg", [
    (["--weights", "missing.safetensors"], "no such file"),
    (["--weights", "pickled.pt"], "cannot read it as safetensors or a state_dict"),
    (["--weights", "w.pt", "--model", "bn_user_models_cli:make_other"], "do not match"),
    (["--weights", "w.pt", "--data", "X_bad.npy"], "fails on X of shape [40, 4]"),
    (["--weights", "w.pt", "--layers", "blocks.9"], "no module named 'blocks.9'"),
    (["--weights", "w.pt", "--model", "bn_user_models_cli"], "'package.module:factory'"),
    (["--weights", "w.pt", "--model", "no_such_pkg:make"], "cannot import"),
    (["--weights", "w.pt", "--model", "bn_user_models_cli:broken"], "failed (ValueError"),
    (["--weights", "w.pt", "--k", "9"], "k must be an integer with 0 <= k"),
])
def test_analyze_user_model_bad_input_exits_2_writes_nothing(user_dir, capsys, extra, msg):
    tmp, _ = user_dir
    args = ["analyze", "--model", "bn_user_models_cli:make", "--data", "X.npy", *extra,
            "--plot", "fig.png"]
    # later options win: a second --model/--data replaces the first
    assert main(args) == 2
    e = capsys.readouterr().err
    assert msg in e and len(e.strip().splitlines()) == 1, e
    assert not (tmp / "fig.png").exists()


def test_analyze_needs_a_run_or_a_model(tmp_path, capsys):
    assert main(["analyze"]) == 2
    assert "give a run directory" in capsys.readouterr().err
    assert main(["analyze", "--model", "x:y"]) == 2
    assert "--model and --data go together" in capsys.readouterr().err
