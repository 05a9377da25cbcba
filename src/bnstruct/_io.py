"""Atomic file writes (a temporary name in the same directory, then ``os.replace``) and
strict JSON (no NaN/Infinity)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "save_tensors", "jsonable", "dumps"]


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = _tmp(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Atomically save tensors (moved to CPU, made contiguous) as safetensors, with optional
    string ``metadata`` in the file's header."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = _tmp(path)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata=metadata)
    os.replace(tmp, path)


def jsonable(x: Any) -> Any:
    """``x`` made strict-JSON-safe: dicts/lists/tuples recursed, tensors and arrays as lists,
    NumPy scalars as Python numbers, and non-finite floats (NaN, +-inf) as ``None``.

    Strict JSON has no NaN or Infinity (``jq`` and most parsers reject them); wherever a
    ``None`` stands for one, the record carries a status or note field saying why."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if torch.is_tensor(x):
        return jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(float(x)) else None
    if x is None or isinstance(x, str):
        return x
    try:
        if pd.isna(x):
            return None
    except (TypeError, ValueError):
        pass
    return str(x)


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see :func:`jsonable`; never writes NaN or Infinity)."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)
