"""Every command's output fits the terminal it finds: run each one (its help too) at
``COLUMNS=100`` with stdout piped, and once with no ``COLUMNS`` at all (piped: 100 columns),
and check that no line of stdout or stderr is longer than 100 characters.

One subprocess runs every command in turn through :func:`bnstruct.cli.main` (tiny sizes), so
the consoles see exactly what a shell pipe gives them. ``bench analyze-general`` runs only its
help here (its benchmark takes over a minute at any size; its table is printed through the
same width-fitting ``print_df`` as every other bench table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r'''
import contextlib, io, json, sys
from pathlib import Path
import numpy as np, torch
from torch import nn
from safetensors.torch import save_file

import bnstruct.report
from bnstruct.cli import main
from bnstruct.experiments import Claim

tmp = Path(sys.argv[1])
store = tmp / "runs"
results = {}


def run(name, *argv):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main(list(argv))
    results[name] = {"rc": rc, "out": o.getvalue(), "err": e.getvalue()}


tiny = ["--depth", "3", "--width", "8", "--n-train", "32", "--steps", "60", "--out", str(store)]
run("--version", "--version")
run("--help", "--help")
for cmd in ("train", "sweep", "runs", "fit-depth", "analyze", "plot-history", "reproduce",
            "bench"):
    run(f"{cmd} --help", cmd, "--help")
for cmd in ("train", "sweep", "plan", "ntk", "analyze", "analyze-general"):
    run(f"bench {cmd} --help", "bench", cmd, "--help")
run("train", "train", *tiny, "--seed", "0")
run("train (not converged)", "train", *tiny, "--seed", "1", "--lr", "1e-4")
early = results["train (not converged)"]["out"].splitlines()[0].split(": ", 1)[1]
run("analyze (not converged)", "analyze", early)
run("sweep --dry-run", "sweep", "--depth", "2,3,4", *tiny[2:], "--seed", "0-1", "--dry-run")
run("sweep", "sweep", "--depth", "2,3,4", *tiny[2:], "--seed", "0-1", "--lr", "1e-3,2e-3")
run("runs", "runs", str(store))
run("fit-depth", "fit-depth", str(store))
names = sorted(p.parent for p in store.glob("*/config.json"))
run("analyze", "analyze", str(names[0]))
run("analyze (two runs)", "analyze", str(names[0]), str(names[1]), "--k", "1")
run("analyze --all", "analyze", str(names[0]), "--all")
run("plot-history", "plot-history", *map(str, names[:3]), "--out", str(tmp / "h.png"))

(tmp / "bn_width_models.py").write_text(
    "from torch import nn\n"
    "def make():\n"
    "    return nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 8), nn.Tanh(),\n"
    "                         nn.Linear(8, 3))\n")
sys.path.insert(0, str(tmp))
import bn_width_models
torch.manual_seed(0)
save_file(bn_width_models.make().state_dict(), str(tmp / "w.safetensors"))
np.save(tmp / "X.npy", np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32))
run("analyze --model", "analyze", "--model", "bn_width_models:make", "--weights",
    str(tmp / "w.safetensors"), "--data", str(tmp / "X.npy"))

long_key = "off-slope +0.12 ± 0.04; on 0.85 at L=20; max s3*sqrt(L) 1.87; " * 3
claims = [Claim("representation-convergence", "s", "m" * 500, "e", "t", False, key=long_key,
                bound="b", why="w" * 300),
          Claim("bound", "s", "m", "e", "t", True, key="min slack 3.54 over 4608 pairs"),
          Claim("digits", "s", "m", "e", "t", True, kind="finding", key="rank 4.7 ± 0.3"),
          Claim.crashed("linear", "s", "claim", RuntimeError("x" * 300))]
bnstruct.report.reproduce = lambda *a, **k: claims  # the closing lines, without training
run("reproduce", "reproduce", "--smoke", "--out", str(tmp / "rep"))

for spec in (["train", "--depth", "3", "--width", "8", "--n", "16", "--rounds", "1"],
             ["ntk", "--depth", "3", "--width", "8", "--n", "16", "--rounds", "1"],
             ["analyze", "--depth", "3", "--width", "8", "--n", "16", "--d-out", "4",
              "--rounds", "1"],
             ["plan", "--mode", "smoke", "--only", "bound", "--sample-steps", "2"]):
    run("bench " + spec[0], "bench", *spec)
run("error", "analyze", str(tmp / "nothing-here"))
print(json.dumps(results))
'''


def _run_all(tmp: Path, columns: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = columns
    env["MPLBACKEND"] = "Agg"
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp)], capture_output=True,
                         text=True, env=env, timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return _run_all(tmp_path_factory.mktemp("widths"), "100")


def _too_long(results: dict, width: int = 100) -> list[str]:
    bad = []
    for name, r in results.items():
        for stream in ("out", "err"):
            for line in r[stream].splitlines():
                if len(line) > width:
                    bad.append(f"{name} ({stream}, {len(line)}): {line!r}")
    return bad


def test_every_command_fits_100_columns(outputs):
    expected_rc = {"reproduce": 1, "error": 2}
    for name, r in outputs.items():
        assert r["rc"] == expected_rc.get(name, 0), (name, r["err"][-2000:])
    bad = _too_long(outputs)
    assert not bad, "\n".join(bad[:20])


def test_the_commands_say_what_a_reader_needs(outputs):
    assert outputs["--version"]["out"].startswith("bnstruct ")
    assert "plot-history" in outputs["--help"]["out"]
    # runs: full names (copyable) and the columns that tell the sweep's runs apart
    runs = outputs["runs"]["out"]
    assert "…" not in runs and "lr" in runs and "seed" in runs and "depth" in runs
    assert "the same in every run:" in runs
    # analyze: one table per run, the energy rank, in_BN as yes/no
    two = outputs["analyze (two runs)"]["out"]
    assert two.count("layers of ") == 2 and "energy" in two
    assert " yes" in two or " no" in two
    # train: two short lines; the under-trained run is flagged, by analyze too
    assert "warning: not converged" in outputs["train (not converged)"]["out"]
    assert "warning: not converged" in outputs["analyze (not converged)"]["out"]
    assert "rescaling_grad" in outputs["analyze (not converged)"]["out"]
    # reproduce: the headline, one line per claim, where the report and claims.md are
    rep = outputs["reproduce"]["out"].splitlines()
    assert "1 of 3 claims pass, 1 error, 1 finding" in rep[0]
    for name in ("representation-convergence", "bound", "digits", "linear"):
        assert sum(line.startswith(name) for line in rep) == 1, (name, rep)
    assert any(line.startswith("report: ") for line in rep)
    assert any(line.startswith("claims: ") for line in rep)
    assert "…" in next(line for line in rep if line.startswith("representation-convergence"))
    assert outputs["error"]["err"].startswith("error: ")


def test_piped_output_without_columns_is_100_wide(tmp_path):
    """No COLUMNS and no terminal (a pipe into a file): 100 columns, not rich's 80 nor the
    200-240 the tables used to take."""
    from bnstruct.cli._app import PIPE_WIDTH

    assert PIPE_WIDTH == 100
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    code = ("import sys; from bnstruct.cli._app import out, err; "
            "print(out.width, err.width)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=120)
    assert res.stdout.split() == ["100", "100"], res.stderr
