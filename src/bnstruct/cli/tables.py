"""Terminal tables of an :class:`~bnstruct.Analysis`: the per-layer table of a chain and the
weight and representation tables of a general model."""

from __future__ import annotations

from rich.table import Table

from ._app import df_table

__all__ = ["analysis_table", "general_tables"]


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "" if v != v else f"{v:.3g}"
    return str(v)


def analysis_table(a, *, all_columns: bool = False, title: str | None = None
                   ) -> Table:
    """The per-layer table of an :class:`~bnstruct.Analysis`.

    Default: the columns that fit a 100-column terminal (layer, shape, s1..s_k (at most 4),
    s_(k+1), near-1 count, gap rank, the energy rank of the representation (what the claims
    judge) and its participation ratio, in-bottleneck as yes/no); ``all_columns``:
    every column of :data:`bnstruct.diagnostics.LAYER_COLUMNS`."""
    from rich import box

    df = a.layers
    if all_columns:
        return df_table(df, title=title)
    k = int(a.summary["k"])
    cols: list[tuple[str, list[str]]] = [
        ("layer", [str(v) for v in df["layer"]]),
        ("shape", [f"{o}x{i}" for o, i in zip(df["n_out"], df["n_in"], strict=True)]),
    ]
    for i in range(1, min(k, 4) + 1):
        cols.append((f"s{i}", [_fmt(v) for v in df[f"s{i}"]]))
    cols += [
        (f"s{k + 1}=s_k+1", [_fmt(v) for v in df["s_k1"]]),
        ("near1", [str(v) for v in df["near_one"]]),
        ("gap_at", [str(int(v)) if v == v else "" for v in df["gap_rank"]]),
        ("energy", [str(v) for v in df["rep_energy_rank"]]),
        ("rep_PR", [_fmt(v) for v in df["rep_erank_participation"]]),
        ("in_BN", [_fmt(bool(v)) for v in df["in_bottleneck"]]),
    ]
    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              padding=(0, 1), collapse_padding=True, show_edge=False,
              caption="near1: #s_i(W) in [0.5, 2]; gap_at: gap_rank of W; energy: energy rank "
                      "of the centered representation (the claims' measure: fewest principal "
                      "directions holding all but 1% of its energy); rep_PR: its "
                      "participation ratio; in_BN: in_bottleneck (clear gap at k); --all: "
                      "every column")
    for name, _ in cols:
        t.add_column(name, justify="left" if name == "shape" else "right", no_wrap=True)
    for r in range(len(df)):
        t.add_row(*[vals[r] for _, vals in cols])
    return t


def _compact_table(cols: list[tuple[str, list[str]]], title: str | None, caption: str
                   ) -> Table:
    from rich import box
    from rich.text import Text

    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              padding=(0, 1), collapse_padding=True, show_edge=False, caption=Text(caption))
    for name, _ in cols:
        t.add_column(name, justify="left" if name in ("name", "shape") else "right",
                     no_wrap=True)
    for r in range(len(cols[0][1]) if cols else 0):
        t.add_row(*[vals[r] for _, vals in cols])
    return t


def general_tables(a, *, title: str | None = None) -> tuple[Table, Table]:
    """The weight table and the representation table of a general model's analysis."""
    df, rp = a.layers, a.representations
    k = int(a.summary["k"])
    wcols: list[tuple[str, list[str]]] = [
        ("layer", [str(v) for v in df["layer"]]),
        ("name", [str(v) for v in df["name"]]),
        ("shape", [f"{o}x{i}" for o, i in zip(df["n_out"], df["n_in"], strict=True)]),
    ]
    for i in range(1, min(max(k + 1, 2), 4) + 1):
        wcols.append((f"s{i}", [_fmt(v) for v in df[f"s{i}"]]))
    wcols += [("gap_at", [str(int(v)) if v == v else "" for v in df["gap_rank"]]),
              ("stable", [_fmt(v) for v in df["stable_rank"]]),
              ("PR", [_fmt(v) for v in df["w_erank_participation"]])]
    rcols: list[tuple[str, list[str]]] = [
        ("rep", [str(v) for v in rp["rep"]]),
        ("name", [str(v) for v in rp["name"]]),
        ("shape", ["x".join(map(str, v)) for v in rp["shape"]]),
        ("rank", [str(v) for v in rp["rep_rank_numerical"]]),
        ("energy", [str(v) for v in rp["rep_energy_rank"]]),
        ("PR", [_fmt(v) for v in rp["rep_erank_participation"]]),
        ("ch_PR", [_fmt(v) for v in rp["chan_erank_participation"]]),
        ("jac", [str(v) for v in rp["jac_rank"]]),
        ("in_BN", [_fmt(v) for v in rp["in_bottleneck"]]),
    ]
    return (_compact_table(wcols, title, "weights: Linear [out, in], Conv as out x (in*k); "
                                         "gap_at: gap_rank; PR: participation ratio"),
            _compact_table(rcols, "representations",
                           "rank: numerical; energy: principal directions holding all but "
                           f"{a.summary['thresholds']['energy_tol']:g} of the energy; PR / "
                           "ch_PR: participation ratio of the flat / per-channel view; jac: "
                           "rank of d h / d x"))

