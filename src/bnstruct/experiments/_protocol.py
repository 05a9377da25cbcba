"""The experiment protocol: what every claim module defines (checked by a test for each
registered experiment).

A claim runs in four steps, so that every training run is known before anything trains (and
an executor can batch or distribute them all at once):

1. ``plan(cfg) -> list[RunConfig]``: every training run the claim needs (pure, no I/O);
2. the caller trains them (``bnstruct.executors.execute``: once, for all claims together);
3. ``measure(cfg, runs, *, memo=None)``: ``runs`` are the trained (or reused) runs of the
   plan, in plan order; no training happens here. ``memo`` is an explicit per-reproduce
   :class:`~bnstruct.experiments._records.Memo` through which claims that read the same nets
   share their measurements;
4. ``verdict(measured, cfg) -> Claim`` (pure: tests feed it synthetic measurements that
   violate the claim) and ``figures(measured, figdir) -> list[Path]``.

``statement(cfg)`` and every note are generated from the config, so they cannot drift from
what ran. ``CAPTIONS`` maps each figure's file stem (``figures`` writes ``<stem>.png``) to
its caption in the report; the verdict fills the claim's one-line summary (``key``,
``bound``, ``checked``, ``why``: see :class:`~bnstruct.experiments._records.Claim`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..config import RunConfig
from ..store import Run
from ._records import Claim, Kind, Memo

__all__ = ["Experiment"]


class Experiment(Protocol):
    """A claim module (modules implement this protocol; ``mypy`` checks the registry)."""

    NAME: str
    KIND: Kind
    CONFIGS: Mapping[str, Any]
    CAPTIONS: Mapping[str, str]

    def statement(self, cfg: Any) -> str: ...

    def plan(self, cfg: Any) -> list[RunConfig]: ...

    def measure(self, cfg: Any, runs: Sequence[Run], *, memo: Memo | None = None) -> Any: ...

    def verdict(self, measured: Any, cfg: Any) -> Claim: ...

    def figures(self, measured: Any, figdir: Path) -> list[Path]: ...
