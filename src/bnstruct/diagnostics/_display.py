"""How an :class:`~bnstruct.diagnostics.Analysis` shows itself: a one-line ``repr`` and a
short HTML summary in Jupyter (what was measured and whether to trust it; the tables stay in
``a.layers``, ``a.representations`` and ``a.summary``)."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["analysis_repr", "analysis_html"]


def _num(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return format(v, spec) if v == v else "nan"
    return str(v)


def _facts(a: Any) -> list[tuple[str, str]]:
    s = a.summary
    general = a.representations is not None
    kind = ("general model" if general else "leaky ResNet"
            if s.get("implementation") == "leaky-resnet" else "chain")
    bl = s.get("bottleneck_layers")
    rows = [
        ("model", f"{kind} of {len(a.layers)} weight "
                  f"layer(s), {s.get('n_points')} points, {s.get('implementation')}"),
        ("k", f"{s.get('k')} ({s.get('k_source', 'given')})"),
        ("bottleneck rank", f"{s.get('bottleneck_rank')} "
                            f"({str(s.get('bottleneck_rank_method')).split(':')[0]})"),
        ("bottleneck layers", "none" if not bl else f"{bl[0]}-{bl[1]}"),
    ]
    if s.get("bound_slack_min") is not None:
        rows.append(("min bound slack", _num(s.get("bound_slack_min"))))
    if "ntk_max_eig_per_NL" in s:
        rows.append(("NTK max eig / (N L)", _num(s["ntk_max_eig_per_NL"])))
    if "rel_fit" in s:
        rows.append(("relative fit", _num(s["rel_fit"])))
    if s.get("rescaling_grad") is not None:
        rows.append(("rescaling gradient", _num(s["rescaling_grad"])))
    return rows


def analysis_repr(a: Any) -> str:
    """One line: the model, k, the bottleneck rank and layers, and the warning if any."""
    facts = dict(_facts(a))
    w = a.summary.get("warning")
    return (f"Analysis({facts['model']}; k = {facts['k']}; bottleneck rank "
            f"{a.summary.get('bottleneck_rank')}, bottleneck layers {facts['bottleneck layers']}"
            + (f"; min slack {facts['min bound slack']}" if "min bound slack" in facts else "")
            + ("; WARNING: not converged" if w else "") + ")")


def analysis_html(a: Any) -> str:
    """A short summary table, the convergence warning when there is one, and where the full
    tables are."""
    e = html.escape
    rows = "".join(f"<tr><th style='text-align:left'>{e(k)}</th><td style='text-align:left'>"
                   f"{e(v)}</td></tr>" for k, v in _facts(a))
    w = a.summary.get("warning")
    warn = (f"<p style='color:#8a4b00'><b>warning:</b> {e(str(w))}</p>" if w else "")
    more = (f"<p style='color:#555;font-size:90%'><code>.layers</code>: {len(a.layers)} rows x "
            f"{len(a.layers.columns)} columns"
            + (f"; <code>.representations</code>: {len(a.representations)} rows"
               if a.representations is not None else "")
            + f"; <code>.summary</code>: {len(a.summary)} quantities; <code>.plot()</code>: "
            "the figures.</p>")
    return (f"<div class='bnstruct-analysis'><b>bnstruct analysis</b><table>{rows}</table>"
            f"{warn}{more}</div>")
