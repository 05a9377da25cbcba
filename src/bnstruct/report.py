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
    out/claims.md     the headline, an overview table and one section per claim (badge, key
                      number against its bound, what was checked, why a failure failed, its
                      figures with captions, the full measurement in a <details>)
    out/report.html   the same as one offline page (figures embedded, each beside its claim)
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
from .experiments import EXPERIMENTS, MODES, Claim, Memo, figure_captions, get_config
from .store import Run

__all__ = ["reproduce", "write_report", "headline", "key_line", "verdict_word", "THEORY_DOC"]


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
            return dataclasses.replace(claim, figures=figs, captions=figure_captions(name, figs),
                                       seconds=time.perf_counter() - t0)
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
            row["captions"] = tuple(row.get("captions", ()))
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
                            "headline": headline(claims),
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


# --------------------------------------------------------------------------- what a reader sees

#: where the science behind every claim is written down (in the repository)
THEORY_DOC = "docs/theory.md"

_BADGE = {"pass": "PASS", "FAIL": "FAIL", "reported": "FINDING", "error": "ERROR"}


def verdict_word(c: Claim) -> str:
    """The badge of a claim: ``PASS`` | ``FAIL`` | ``FINDING`` (a finding that ran) |
    ``ERROR`` (the experiment crashed: a pipeline error, not a failed claim)."""
    return _BADGE[c.outcome]


def headline(claims: Sequence[Claim]) -> str:
    """Claims and findings counted apart, e.g. ``"8 of 9 claims pass, 1 finding"`` (``"7 of 9
    claims pass, 1 error, 1 finding"``; a finding that could not be reported counts as
    failed: ``"1 finding (1 failed)"``)."""
    real = [c for c in claims if c.kind == "claim"]
    found = [c for c in claims if c.kind == "finding"]
    n_pass = sum(c.outcome == "pass" for c in real)
    errors = sum(c.outcome == "error" for c in real)
    parts = [f"{n_pass} of {len(real)} claim{'s' if len(real) != 1 else ''} pass"]
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if found:
        bad = [f"{n} {w}" for w, n in (
            ("failed", sum(c.outcome == "FAIL" for c in found)),
            ("error" if sum(c.outcome == "error" for c in found) == 1 else "errors",
             sum(c.outcome == "error" for c in found))) if n]
        parts.append(f"{len(found)} finding{'s' if len(found) != 1 else ''}"
                     + (f" ({', '.join(bad)})" if bad else ""))
    return ", ".join(parts)


def key_line(c: Claim) -> str:
    """The claim's key number next to its bound, one line (``key  (bound: ...)``); for a
    crashed experiment its error."""
    if c.error is not None:
        return f"error: {c.error}"
    if not c.key:
        return "(no summary recorded: see the full measurement)"
    return f"{c.key}  (bound: {c.bound})" if c.bound else c.key


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _kept_note(meta: dict[str, Any]) -> str:
    kept = meta.get("carried_over") or []
    return f"; kept from the earlier report: {', '.join(kept)}" if kept else ""


def _run_note(meta: dict[str, Any]) -> str:
    return (f"{meta['seconds']:.0f} s on {meta['device']} (bnstruct {meta['bnstruct']}, torch "
            f"{meta['torch']}, {meta['created']})" + _kept_note(meta))


def _anchor(name: str) -> str:
    return "claim-" + name


def _markdown(claims: Sequence[Claim], meta: dict[str, Any], out: Path) -> str:
    lines = [f"# bnstruct reproduce --{meta['mode']}", "",
             f"**{headline(claims)}**. {_run_note(meta)}. Definitions and the claims as "
             f"tested: `{THEORY_DOC}` in the bnstruct repository.", "",
             "| claim | verdict | key number | bound |", "| --- | --- | --- | --- |"]
    for c in claims:
        key = f"error: {c.error}" if c.error is not None else (c.key or "-")
        lines.append(f"| [{c.name}](#{_anchor(c.name)}) | {verdict_word(c)} | "
                     f"{_md_cell(key)} | {_md_cell(c.bound or '-')} |")
    n_fig = 0
    for c in claims:
        lines += ["", f'<a id="{_anchor(c.name)}"></a>', "",
                  f"## {c.name}: {verdict_word(c)}", "", f"**{key_line(c)}**", ""]
        if c.checked:
            lines += [c.checked, ""]
        if c.why and c.outcome != "pass":
            lines += [f"**Why it {'fails' if c.error is None else 'has no verdict'}:** "
                      f"{c.why}.", ""]
        for f, cap in zip(c.figures, _captions(c), strict=True):
            n_fig += 1
            lines += [f"![{c.name}]({_rel(f, out)})", "", f"*Figure {n_fig}. {cap}*", ""]
        lines += ["<details><summary>Full measurement</summary>", ""]
        lines += [f"- **{k}**: {_md_cell(v)}" for k, v in _details(c)]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _captions(c: Claim) -> tuple[str, ...]:
    """One caption per figure (an old record without captions: the file stem)."""
    if len(c.captions) == len(c.figures):
        return c.captions
    return tuple(Path(f).stem.replace("_", " ") for f in c.figures)


def _details(c: Claim) -> list[tuple[str, str]]:
    rows = [("statement", c.statement),
            ("measured", c.measured if c.error is None else f"error: {c.error}"),
            ("predicted", c.expected), ("tolerance", c.tolerance)]
    if c.note:
        rows.append(("note", c.note))
    rows.append(("theory", f"{THEORY_DOC}#claim-{c.name} (the claim as tested)"))
    rows.append(("seconds", f"{c.seconds:.1f} (measurement, verdict and figures)"))
    return rows


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1400px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} .headline{font-size:1.35em;font-weight:600;margin:.2em 0}
.meta{color:#555;font-size:14px}
table.overview{border-collapse:collapse;width:100%;font-size:14px;margin:1em 0 2em}
.overview th,.overview td{border-bottom:1px solid #ddd;padding:5px 8px;text-align:left;
vertical-align:top} .overview th{background:#f5f5f5}
.badge{display:inline-block;min-width:5.5em;text-align:center;border-radius:4px;
padding:1px 8px;font-size:13px;font-weight:700;color:#fff;vertical-align:middle}
.badge.pass{background:#1b7f3b} .badge.fail{background:#b00020}
.badge.finding{background:#5a5a8c} .badge.error{background:#8a4b00}
section.claim{display:grid;grid-template-columns:minmax(280px,2fr) minmax(0,3fr);gap:1.5em;
border-top:1px solid #ddd;padding:1.2em 0}
section.claim h2{margin:0 0 .4em;font-size:1.3em}
.key{font-size:1.05em} .key .num{font-weight:700} .key .vs{color:#666}
.checked{color:#333} .why{background:#fff3f3;border-left:4px solid #b00020;padding:.4em .8em}
details{margin-top:.8em;font-size:13px} details dt{font-weight:600;margin-top:.4em}
details dd{margin-left:1em}
figure{margin:0 0 1em} img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#444}
@media (max-width:900px){section.claim{grid-template-columns:1fr}}
"""


def _img(path: str, alt: str) -> str:
    p = Path(path)
    if not p.exists():
        return f"<p>missing figure {html.escape(str(p))}</p>"
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(claims: Sequence[Claim], meta: dict[str, Any]) -> str:
    e = html.escape
    over = []
    for c in claims:
        w = verdict_word(c)
        key = f"error: {c.error}" if c.error is not None else (c.key or "-")
        over.append(f"<tr><td><a href='#{_anchor(c.name)}'>{e(c.name)}</a></td>"
                    f"<td><span class='badge {w.lower()}'>{w}</span></td>"
                    f"<td>{e(key)}</td><td>{e(c.bound or '-')}</td></tr>")
    cards, n_fig = [], 0
    for c in claims:
        w = verdict_word(c)
        if c.error is not None:
            key = f"<span class='num'>error</span> {e(c.error)}"
        elif c.key:
            key = (f"<span class='num'>{e(c.key)}</span>"
                   + (f" <span class='vs'>against</span> <span class='bound'>{e(c.bound)}"
                      "</span>" if c.bound else ""))
        else:
            key = "<span class='num'>(no summary recorded)</span>"
        why = (f"<p class='why'><b>Why it {'fails' if c.error is None else 'has no verdict'}:"
               f"</b> {e(c.why)}.</p>" if c.why and c.outcome != "pass" else "")
        figs = []
        for f, cap in zip(c.figures, _captions(c), strict=True):
            n_fig += 1
            figs.append(f"<figure id='fig-{e(Path(f).stem)}'>{_img(f, cap)}<figcaption><b>"
                        f"Figure {n_fig}.</b> {e(cap)}</figcaption></figure>")
        dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _details(c))
        cards.append(
            f"<section class='claim' id='{_anchor(c.name)}' data-verdict='{w.lower()}'>"
            f"<div class='text'><h2>{e(c.name)} <span class='badge {w.lower()}'>{w}</span>"
            f"</h2><p class='key'>{key}</p>"
            + (f"<p class='checked'>{e(c.checked)}</p>" if c.checked else "")
            + f"{why}<details><summary>Full measurement</summary><dl>{dl}</dl></details>"
            f"</div><div class='figs'>{''.join(figs)}</div></section>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bnstruct reproduce --{e(meta['mode'])}: {e(headline(claims))}</title>
<style>{_CSS}</style></head><body>
<header><h1>bnstruct reproduce --{e(meta['mode'])}</h1>
<p class="headline">{e(headline(claims))}</p>
<p class="meta">Jacot (2023), <i>Bottleneck Structure in Learned Features: Low-Dimension vs
Regularity Tradeoff</i> (arXiv 2305.19008) and Jacot (2022), <i>Implicit Bias of Large Depth
Networks: a Notion of Rank for Nonlinear Functions</i> (arXiv 2209.15055). Definitions and the
claims as tested: <code>{THEORY_DOC}</code> in the bnstruct repository. {e(_run_note(meta))}.
Numbers after ± are standard errors over the seeds.</p></header>
<table class="overview"><thead><tr><th>claim</th><th>verdict</th><th>key number</th>
<th>bound</th></tr></thead><tbody>
{''.join(over)}
</tbody></table>
{''.join(cards)}
</body></html>
"""
