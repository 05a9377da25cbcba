"""``bnstruct reproduce``: run the claims and write ``claims.json``, ``claims.md``, the
figures (PNG) and a self-contained ``report.html`` (figures embedded as base64).

Layout of ``out``::

    out/runs/         the run store (every training run; reused by a second reproduce)
    out/figures/      one or more PNG per claim
    out/claims.json   per claim: name, statement, measured, expected, tolerance, passed,
                      seconds, figures (paths relative to out), values
    out/claims.md     the claims table
    out/report.html   the table and every figure, one offline page
"""

from __future__ import annotations

import base64
import html
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._io import atomic_write_text
from .errors import ConfigError
from .experiments import EXPERIMENTS, MODES, Claim, Context, run_experiment

__all__ = ["reproduce", "write_report"]


def reproduce(mode: str = "quick", out: str | Path = "reproduce", *,
              only: Sequence[str] | None = None, device: str = "cpu",
              on_start: Callable[[str], None] | None = None,
              on_done: Callable[[Claim], None] | None = None,
              on_note: Callable[[str], None] | None = None) -> list[Claim]:
    """Run the experiments of ``mode`` (all, or ``only`` those names) and write the report.

    An experiment that raises is recorded as a failed claim with the error as its measurement
    (the other experiments still run). Returns the claims in run order.

    With ``only``, the report keeps the other claims of an earlier report of the same ``mode``
    in ``out`` (listed in ``claims.json``'s ``meta["carried_over"]``): re-running one claim
    updates it in place instead of dropping the rest."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    names = list(EXPERIMENTS) if not only else list(only)
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise ConfigError(f"unknown experiment(s) {bad}: choose from {', '.join(EXPERIMENTS)}")
    out = Path(out)
    ctx = Context(store=out / "runs", figdir=out / "figures", device=device, progress=on_note)
    claims: list[Claim] = []
    t0 = time.perf_counter()
    for name in names:
        if on_start is not None:
            on_start(name)
        t1 = time.perf_counter()
        try:
            c = run_experiment(name, mode, ctx)
        except Exception as e:  # noqa: BLE001 - one broken experiment must not hide the rest
            mod = EXPERIMENTS[name]
            c = Claim(name, mod.STATEMENT, measured=f"error: {type(e).__name__}: {e}",
                      expected="-", tolerance="-", passed=False,
                      seconds=time.perf_counter() - t1, values={"error": repr(e)},
                      kind=getattr(mod, "KIND", "claim"))
        claims.append(c)
        if on_done is not None:
            on_done(c)
    kept = _earlier_claims(out, mode, exclude=names) if only else []
    order = {n: i for i, n in enumerate(EXPERIMENTS)}
    merged = sorted([*claims, *kept], key=lambda c: order[c.name])
    write_report(merged, out, mode=mode, seconds=time.perf_counter() - t0, device=device,
                 carried_over=[c.name for c in kept])
    return claims


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
            row = dict(row, figures=tuple(str(out / f) for f in row.get("figures", ())))
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
                 device: str = "cpu", carried_over: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``claims.json``, ``claims.md`` and ``report.html`` into ``out``
    (``carried_over``: names of claims kept from an earlier report, recorded in the meta)."""
    import torch

    from . import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"mode": mode, "seconds": seconds, "device": device,
                            "bnstruct": __version__, "torch": torch.__version__,
                            "python": platform.python_version(),
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "passed": all(c.passed for c in claims),
                            "carried_over": list(carried_over)}
    rows = []
    for c in claims:
        d = c.to_dict()
        d["figures"] = [_rel(f, out) for f in c.figures]
        rows.append(d)
    paths = {"json": out / "claims.json", "md": out / "claims.md", "html": out / "report.html"}
    atomic_write_text(paths["json"], json.dumps({"meta": meta, "claims": rows}, indent=2,
                                                allow_nan=False, default=str))
    atomic_write_text(paths["md"], _markdown(claims, meta, out))
    atomic_write_text(paths["html"], _html(claims, meta))
    return paths


def _verdict_word(c: Claim) -> str:
    if c.kind == "finding":
        return "reported" if c.passed else "FAIL"
    return "pass" if c.passed else "FAIL"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _kept_note(meta: dict[str, Any]) -> str:
    kept = meta.get("carried_over") or []
    return f"; kept from the earlier report: {', '.join(kept)}" if kept else ""


def _markdown(claims: Sequence[Claim], meta: dict[str, Any], out: Path) -> str:
    lines = [f"# bnstruct reproduce --{meta['mode']}", "",
             f"{sum(c.passed for c in claims)}/{len(claims)} passed in {meta['seconds']:.0f} s "
             f"on {meta['device']} (bnstruct {meta['bnstruct']}, torch {meta['torch']})"
             + _kept_note(meta) + ".", "",
             "| claim | verdict | measured | expected | tolerance | seconds |",
             "| --- | --- | --- | --- | --- | ---: |"]
    for c in claims:
        lines.append(f"| {c.name} | {_verdict_word(c)} | {_md_cell(c.measured)} | "
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
        cls = {"pass": "pass", "FAIL": "fail", "reported": "rep"}[_verdict_word(c)]
        rows.append(f"<tr><td><b>{e(c.name)}</b><div class='stmt'>{e(c.statement)}</div></td>"
                    f"<td class='{cls}'>{_verdict_word(c)}</td><td>{e(c.measured)}</td>"
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
