"""The one engine's shape (issue 23): no function over 80 lines in ``training/``,
``executors/`` and ``store.py``; one stage loop; one stop signal (no SIGURG, no private pool
attributes)."""

import ast
from pathlib import Path

import bnstruct as bn

SRC = Path(bn.__file__).parent
ENGINE = [*sorted((SRC / "training").glob("*.py")), *sorted((SRC / "executors").glob("*.py")),
          SRC / "store.py"]


def _functions(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_engine_function_over_80_lines():
    long = {f"{p.relative_to(SRC)}:{name}": n for p in ENGINE for name, n in _functions(p)
            if n > 80}
    assert not long, long
    assert sum(1 for p in ENGINE for _ in _functions(p)) > 50  # the walk found the code


def test_one_loop_and_one_stop_signal():
    """Only the loop draws minibatches and checks divergence; nothing sends signals to
    workers or reads CPython's private pool state."""
    text = {p: p.read_text() for p in SRC.rglob("*.py")}
    loops = [p.name for p, t in text.items() if "_first_nonfinite(" in t and "def " in t
             and "minibatch(" in t]
    assert loops == ["_loop.py"], loops
    for p, t in text.items():
        assert "SIGURG" not in t and "._processes" not in t and "os.kill(" not in t.replace(
            "os.kill(pid, 0)", ""), p
