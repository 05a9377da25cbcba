"""Atomic file writes: a temporary name in the same directory, then ``os.replace``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "save_tensors"]


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
