"""No function in ``bnstruct.diagnostics`` is longer than 80 lines (issue 18): counted from
its ``def`` line to its last line, docstring excluded."""

import ast
from pathlib import Path

import bnstruct.diagnostics

MAX_LINES = 80
ROOT = Path(bnstruct.diagnostics.__file__).parent


def _lengths(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            doc = node.body[0]
            if (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)):
                n -= doc.end_lineno - doc.lineno + 1  # type: ignore[operator]
            out[f"{path.name}:{node.lineno} {node.name}"] = n
    return out


def test_no_function_over_80_lines() -> None:
    sizes = {k: v for p in sorted(ROOT.glob("*.py")) for k, v in _lengths(p).items()}
    assert len(sizes) > 50  # the files were read
    long = {k: v for k, v in sizes.items() if v > MAX_LINES}
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def test_the_count_sees_a_long_function(tmp_path) -> None:  # type: ignore[no-untyped-def]
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f'def f():\n    """doc"""\n{body}\n')
    assert _lengths(tmp_path / "m.py") == {"m.py:1 f": MAX_LINES + 1}
