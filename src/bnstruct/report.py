"""``bnstruct reproduce``: run the claims and write ``claims.json``, ``claims.md``, the
figures (PNG) and a self-contained ``report.html`` (figures embedded as base64).

Layout of ``out``::

    out/runs/         the run store (every training run; reused by a second reproduce)
    out/figures/      one or more PNG per claim
    out/claims.json   strict JSON. meta (mode, versions, seconds, train_seconds, n_runs,
                      passed, errors, carried_over); per claim: name, kind, statement,
                      measured, expected, tolerance, passed, error (null, or the exception of
                      an experiment that crashed), seconds, figures (paths relative to out),
                      values (the numbers; null where one is non-finite) and nonfinite (where
                      those nulls are and what they were)
    out/claims.md     the claims table
    out/report.html   the table and every figure, one offline page
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._io import atomic_write_text, dumps
from .config import RunConfig
from .errors import ConfigError
from .executors import Executor, execute
from .experiments import EXPERIMENTS, MODES, Claim, Memo, get_config
from .store import Run

__all__ = ["reproduce", "write_report"]


def reproduce(mode: str = "quick", out: str | Path = "reproduce", *,
              only: Sequence[str] | None = None, device: str = "cpu",
              on_start: Callable[[str], None] | None = None,
              on_done: Callable[[Claim], None] | None = None,
              on_note: Callable[[str], None] | None = None,
              executor: Executor | None = None) -> list[Claim]:
    """Run the experiments of ``mode`` (all, or ``only`` those names) and write the report.

    Plan, then execute: every selected claim lists its training runs (``plan``), all of them
    are trained (or reused from ``out/runs``) by ONE :func:`bnstruct.executors.execute` call
    (claims that need the same run config share it), then each claim is measured on its own
    runs, judged and drawn. Claims reading the same nets share their measurements through one
    :class:`~bnstruct.experiments.Memo` per call.

    An experiment that raises (while planning, training or measuring) is recorded as a claim
    with ``error`` set, not as a failed claim; the other experiments still run. ``seconds`` of
    a claim is its measurement, verdict and figures; training time is ``meta["train_seconds"]``.
    ``on_note(message)`` reports each training run. Returns the claims in run order.

    With ``only``, the report keeps the other claims of an earlier report of the same ``mode``
    in ``out`` (listed in ``claims.json``'s ``meta["carried_over"]``): re-running one claim
    updates it in place instead of dropping the rest.

    ``executor``: where the runs train (default: a
    :class:`~bnstruct.executors.LocalExecutor`; e.g. ``RayExecutor("auto")``)."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    names = list(EXPERIMENTS) if not only else list(only)
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise ConfigError(f"unknown experiment(s) {bad}: choose from {', '.join(EXPERIMENTS)}")
    out = Path(out)
    store, figdir = out / "runs", out / "figures"
    t0 = time.perf_counter()
    errors: dict[str, BaseException] = {}
    plans: dict[str, list[RunConfig]] = {}
    for name in names:  # 1. plan every claim before anything trains
        try:
            plans[name] = [dataclasses.replace(c, device=device)
                           for c in EXPERIMENTS[name].plan(get_config(name, mode))]
        except Exception as e:  # noqa: BLE001 - one broken experiment must not hide the rest
            errors[name] = e
    t1 = time.perf_counter()
    runs = _train(plans, store, errors, on_note, executor)  # 2. one execute call
    train_seconds = time.perf_counter() - t1
    memo = Memo()
    claims: list[Claim] = []
    for name in names:  # 3. measure, judge, draw
        if on_start is not None:
            on_start(name)
        claims.append(_claim(name, mode, runs.get(name), errors.get(name), figdir, memo))
        if on_done is not None:
            on_done(claims[-1])
    kept = _earlier_claims(out, mode, exclude=names) if only else []
    order = {n: i for i, n in enumerate(EXPERIMENTS)}
    merged = sorted([*claims, *kept], key=lambda c: order[c.name])
    write_report(merged, out, mode=mode, seconds=time.perf_counter() - t0, device=device,
                 carried_over=[c.name for c in kept], train_seconds=train_seconds,
                 n_runs=len({c.default_name() for p in plans.values() for c in p}))
    return claims


def _train(plans: dict[str, list[RunConfig]], store: Path, errors: dict[str, BaseException],
           on_note: Callable[[str], None] | None, executor: Executor | None
           ) -> dict[str, list[Run]]:
    """Train every planned run in one :func:`execute` call; each claim gets its runs in plan
    order. If that call raises, each claim's runs are executed on their own (finished runs
    are reused from the store), so a broken run only errors the claims that need it."""
    everything = [c for p in plans.values() for c in p]
    n = len({c.default_name() for c in everything})
    seen: set[str] = set()

    def progress(cfg: RunConfig) -> None:
        seen.add(cfg.default_name())
        if on_note is not None:
            m = cfg.model
            on_note(f"train {len(seen)}/{n}: {cfg.task.name} {m.kind} L={m.depth} "
                    f"seed {cfg.seed}")

    try:
        trained = execute(everything, store, progress=progress, executor=executor)
    except Exception:  # noqa: BLE001 - isolate the failing claim(s) below
        out: dict[str, list[Run]] = {}
        for name, p in plans.items():
            try:
                out[name] = execute(p, store, progress=progress, executor=executor)
            except Exception as e:  # noqa: BLE001
                errors[name] = e
        return out
    out, i = {}, 0
    for name, p in plans.items():
        out[name], i = trained[i:i + len(p)], i + len(p)
    return out


def _claim(name: str, mode: str, runs: list[Run] | None, error: BaseException | None,
           figdir: Path, memo: Memo) -> Claim:
    mod = EXPERIMENTS[name]
    cfg = get_config(name, mode)
    t0 = time.perf_counter()
    if error is None:
        try:
            assert runs is not None
            measured = mod.measure(cfg, runs, memo=memo)
            claim = mod.verdict(measured, cfg)
            figdir.mkdir(parents=True, exist_ok=True)
            figs = tuple(str(p) for p in mod.figures(measured, figdir))
            return dataclasses.replace(claim, figures=figs, seconds=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - reported as this claim's error
            error = e
    try:
        stmt = mod.statement(cfg)
    except Exception:  # noqa: BLE001
        stmt = name
    return Claim.crashed(name, stmt, mod.KIND, error, time.perf_counter() - t0)


def _earlier_claims(out: Path, mode: str, exclude: Sequence[str]) -> list[Claim]:
    """The claims of ``out/claims.json`` if it was written in ``mode`` (figure paths made
    absolute), minus ``exclude`` and names no longer in the registry; [] when there is none
    or it cannot be read."""
    try:
        d = json.loads((out / "claims.json").read_text())
        if d["meta"]["mode"] != mode:
            return []
        kept = []
        for row in d["claims"]:
            if row["name"] in exclude or row["name"] not in EXPERIMENTS:
                continue
            fields = {f.name for f in dataclasses.fields(Claim)}
            row = {k: v for k, v in row.items() if k in fields}
            row["figures"] = tuple(str(out / f) for f in row.get("figures", ()))
            kept.append(Claim(**row))
        return kept
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _rel(p: str, out: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(p)


def write_report(claims: Sequence[Claim], out: str | Path, *, mode: str, seconds: float,
                 device: str = "cpu", carried_over: Sequence[str] = (),
                 train_seconds: float | None = None, n_runs: int | None = None
                 ) -> dict[str, Path]:
    """Write ``claims.json`` (strict JSON: a non-finite number is ``null``, and the claim's
    ``nonfinite`` entry says where and what it was), ``claims.md`` and ``report.html`` into
    ``out`` (``carried_over``: names of claims kept from an earlier report, recorded in the
    meta)."""
    import torch

    from . import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"mode": mode, "seconds": seconds, "device": device,
                            "bnstruct": __version__, "torch": torch.__version__,
                            "python": platform.python_version(),
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "train_seconds": train_seconds, "n_runs": n_runs,
                            "passed": all(c.passed for c in claims),
                            "errors": [c.name for c in claims if c.error is not None],
                            "carried_over": list(carried_over),
                            "null": "a null number in values stands for a non-finite one "
                                    "(NaN or +-inf); each claim's 'nonfinite' lists them"}
    rows = []
    for c in claims:
        d = c.to_dict()
        d["figures"] = [_rel(f, out) for f in c.figures]
        rows.append(d)
    paths = {"json": out / "claims.json", "md": out / "claims.md", "html": out / "report.html"}
    atomic_write_text(paths["json"], dumps({"meta": meta, "claims": rows}))
    atomic_write_text(paths["md"], _markdown(claims, meta, out))
    atomic_write_text(paths["html"], _html(claims, meta))
    return paths


def _verdict_word(c: Claim) -> str:
    return "ERROR" if c.outcome == "error" else c.outcome


def _measured(c: Claim) -> str:
    return f"error: {c.error}" if c.error is not None else c.measured


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _kept_note(meta: dict[str, Any]) -> str:
    kept = meta.get("carried_over") or []
    return f"; kept from the earlier report: {', '.join(kept)}" if kept else ""


def _markdown(claims: Sequence[Claim], meta: dict[str, Any], out: Path) -> str:
    lines = [f"# bnstruct reproduce --{meta['mode']}", "",
             f"{sum(c.passed for c in claims)}/{len(claims)} passed"
             + (f", {len(meta['errors'])} error(s)" if meta.get("errors") else "")
             + f" in {meta['seconds']:.0f} s "
             f"on {meta['device']} (bnstruct {meta['bnstruct']}, torch {meta['torch']})"
             + _kept_note(meta) + ".", "",
             "| claim | verdict | measured | expected | tolerance | seconds |",
             "| --- | --- | --- | --- | --- | ---: |"]
    for c in claims:
        lines.append(f"| {c.name} | {_verdict_word(c)} | {_md_cell(_measured(c))} | "
                     f"{_md_cell(c.expected)} | {_md_cell(c.tolerance)} | {c.seconds:.1f} |")
    lines += ["", "## Statements", ""]
    for c in claims:
        lines.append(f"- **{c.name}**: {c.statement}" + (f" ({c.note})" if c.note else ""))
    figs = [(c.name, f) for c in claims for f in c.figures]
    if figs:
        lines += ["", "## Figures", ""]
        lines += [f"![{n}]({_rel(f, out)})" for n, f in figs]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border:1px solid #ccc;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f3f3f3} .pass{color:#176f2c;font-weight:bold} .fail{color:#b00020;
font-weight:bold} .rep{color:#555;font-weight:bold} figure{margin:1.5em 0}
img{max-width:100%;border:1px solid #eee} .stmt{color:#555;font-size:13px}
"""


def _img(path: str) -> str:
    p = Path(path)
    if not p.exists():
        return f"<p>missing figure {html.escape(str(p))}</p>"
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(p.name)}" src="data:image/png;base64,{data}">'


def _html(claims: Sequence[Claim], meta: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for c in claims:
        cls = {"pass": "pass", "FAIL": "fail", "reported": "rep", "ERROR": "fail"}[
            _verdict_word(c)]
        rows.append(f"<tr><td><b>{e(c.name)}</b><div class='stmt'>{e(c.statement)}</div></td>"
                    f"<td class='{cls}'>{_verdict_word(c)}</td><td>{e(_measured(c))}</td>"
                    f"<td>{e(c.expected)}</td><td>{e(c.tolerance)}</td>"
                    f"<td>{c.seconds:.1f}</td></tr>")
    figs = []
    for c in claims:
        for f in c.figures:
            figs.append(f"<figure>{_img(f)}<figcaption>{e(c.name)}: {e(Path(f).stem)}"
                        f"</figcaption></figure>")
    n_pass = sum(c.passed for c in claims)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bnstruct reproduce</title>
<style>{_CSS}</style></head><body>
<h1>bnstruct reproduce --{e(meta['mode'])}</h1>
<p>Jacot (2023), <i>Bottleneck Structure in Learned Features</i>: {n_pass}/{len(claims)} claims
passed in {meta['seconds']:.0f} s on {e(meta['device'])} (bnstruct {e(meta['bnstruct'])},
torch {e(meta['torch'])}, {e(meta['created'])}){e(_kept_note(meta))}.</p>
<table><tr><th>claim</th><th>verdict</th><th>measured</th><th>expected</th><th>tolerance</th>
<th>s</th></tr>
{''.join(rows)}
</table>
<h2>Figures</h2>
{''.join(figs)}
</body></html>
"""
