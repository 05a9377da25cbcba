"""The state of an unfinished run, saved to and loaded from one safetensors file.

The tensors (``model.*`` and ``opt.<i>.*``) are the file's tensors; the rest (step, history,
seconds, stages) is JSON in the file's header under ``bnstruct_checkpoint``. One file written
atomically, so a crash can never pair the weights of one step with the history of another. A
readable JSON copy of the header is written next to it (``<prefix>.json``); resume never
reads the copy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write_text, save_tensors
from ..errors import ConfigError
from ._stages import Stage

__all__ = ["TrainState", "checkpoint_step"]

_KEY = "bnstruct_checkpoint"


def optimizer_tensors(opt: torch.optim.Optimizer | None, prefix: str = "opt"
                      ) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as named tensors ``{prefix}.{i}.{name}``."""
    out: dict[str, torch.Tensor] = {}
    if opt is None:
        return out
    i = 0
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                out[f"{prefix}.{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
            i += 1
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           prefix: str = "opt") -> None:
    """Inverse of :func:`optimizer_tensors` (``step`` counters where PyTorch keeps them: on
    the parameter's device for fused or capturable optimizers, else on the CPU)."""
    i = 0
    for group in opt.param_groups:
        for p in group["params"]:
            head = f"{prefix}.{i}."
            st = {k[len(head):]: v.to(p.device) for k, v in tensors.items()
                  if k.startswith(head)}
            if st:
                if "step" in st:
                    st["step"] = st["step"].to(step_device(opt, p))
                opt.state[p] = st
            i += 1


def step_device(opt: torch.optim.Optimizer, p: torch.Tensor) -> torch.device:
    """Where ``opt`` keeps the ``step`` counter of ``p``."""
    g = opt.param_groups[0]
    return p.device if g.get("fused") or g.get("capturable") else torch.device("cpu")


@dataclass
class TrainState:
    """Where a run stands: ``step`` optimizer steps done, the ``history`` rows logged so far,
    ``seconds`` of training so far, the ``stages`` it was started with, and the tensors
    (``model.<name>`` for the weights, ``opt.<i>.<name>`` for the optimizer state of the
    current stage; none at a stage boundary). ``status`` and ``diverged_at`` are set when the
    run ends (they are not saved: a checkpoint always belongs to a running run)."""

    stages: tuple[Stage, ...]
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    status: str = "running"
    diverged_at: int | None = None

    def restore_model(self, model: nn.Module) -> None:
        model.load_state_dict({k[6:]: v for k, v in self.tensors.items()
                               if k.startswith("model.")})

    def header(self) -> str:
        return json.dumps({"step": self.step, "history": self.history,
                           "seconds": self.seconds,
                           "stages": [asdict(s) for s in self.stages]})

    def save(self, prefix: str | Path) -> None:
        """Write ``<prefix>.safetensors`` (atomic; the resume state in its header) and the
        readable copy ``<prefix>.json``."""
        meta = self.header()
        Path(f"{prefix}.safetensors").parent.mkdir(parents=True, exist_ok=True)
        save_tensors(f"{prefix}.safetensors", self.tensors, metadata={_KEY: meta})
        atomic_write_text(f"{prefix}.json", meta)

    @classmethod
    def load(cls, prefix: str | Path, stages: tuple[Stage, ...], *,
             device: torch.device | str = "cpu") -> TrainState | None:
        """The state saved at ``prefix`` (``None`` when there is none). Raises
        :class:`ConfigError` when the file has no resume state or was written for other
        stages."""
        from safetensors.torch import load_file

        path = Path(f"{prefix}.safetensors")
        if not path.exists():
            return None
        meta = _read_meta(path)
        if meta is None:
            raise ConfigError(f"checkpoint {path} has no bnstruct resume state: delete it to "
                              "start over")
        if meta.get("stages") != [asdict(s) for s in stages]:
            raise ConfigError(f"checkpoint {path} was written for other stages; "
                              "resume with the same configuration")
        try:
            return cls(tuple(stages), int(meta["step"]), list(meta["history"]),
                       float(meta["seconds"]), load_file(str(path), device=str(device)))
        except Exception as e:  # noqa: BLE001 - safetensors' errors, named
            raise ConfigError(f"checkpoint {path} cannot be read ({type(e).__name__}): delete "
                              "it to start the run over") from None

    @staticmethod
    def remove(prefix: str | Path) -> None:
        for suffix in (".safetensors", ".json"):
            Path(f"{prefix}{suffix}").unlink(missing_ok=True)


def checkpoint_step(prefix: str | Path) -> int:
    """The step of the checkpoint at ``prefix`` (0 when there is none or it holds no resume
    state)."""

    path = Path(f"{prefix}.safetensors")
    if not path.exists():
        return 0
    meta = _read_meta(path)
    return int(meta["step"]) if meta else 0


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The resume state in a checkpoint's header (``None`` when it has none); an unreadable
    file is a one-line :class:`ConfigError` naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get(_KEY, "null") or "null")
    except Exception as e:  # noqa: BLE001 - safetensors' errors, named
        raise ConfigError(f"checkpoint {path} cannot be read ({type(e).__name__}): delete it "
                          "to start the run over") from None
    if meta is not None and not (isinstance(meta, dict) and "step" in meta):
        raise ConfigError(f"checkpoint {path} has a malformed resume state: delete it to "
                          "start the run over")
    return meta
