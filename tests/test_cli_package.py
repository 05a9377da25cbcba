"""The CLI as a package of thin modules (issue 18): ``--version``, the size limit, and the
library loaders it calls."""

from pathlib import Path

import numpy as np
import pytest
import torch

import bnstruct as bn
from bnstruct.cli import main

CLI = Path(bn.__file__).parent / "cli"


def test_version(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bnstruct {bn.__version__}"


def test_no_cli_module_over_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI.glob("*.py")}
    assert {"train.py", "sweep.py", "runs.py", "analyze.py", "bench.py",
            "reproduce.py"} <= set(sizes)
    assert max(sizes.values()) <= 400, sizes


def test_load_model_from_python(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bn_loading_mod.py").write_text(
        "import torch\n\ndef make():\n    torch.manual_seed(1)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    m = bn.load_model("bn_loading_mod:make")
    sd = {n: torch.randn_like(v) for n, v in m.state_dict().items()}
    torch.save(sd, tmp_path / "w.pt")
    m2 = bn.load_model("bn_loading_mod:make", tmp_path / "w.pt")
    torch.testing.assert_close(m2.state_dict()["0.weight"], sd["0.weight"], rtol=0, atol=0)
    with pytest.raises(bn.ConfigError, match="^weights .* do not match the model"):
        torch.save({"0.weight": sd["0.weight"]}, tmp_path / "bad.pt")
        bn.load_model("bn_loading_mod:make", tmp_path / "bad.pt")
    with pytest.raises(bn.ConfigError, match="^model 'nomodule' must be"):
        bn.load_model("nomodule")


def test_load_points(tmp_path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "i.npy", np.arange(6).reshape(3, 2))
    x = bn.load_points(tmp_path / "i.npy")
    assert x.dtype == torch.get_default_dtype() and x.shape == (3, 2)
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(bn.ConfigError, match="expected a numeric .npy array"):
        bn.load_points(tmp_path / "s.npy")
