"""``bnstruct analyze``: a run directory or ``--model/--data`` through :func:`bnstruct.analyze`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import ConfigError
from ._app import out, print_df
from .tables import analysis_table, general_tables


def _pca_color(task, n: int):
    """A per-point quantity of the task to colour the bottleneck PCA with, when it has one."""
    for key, col, label in (("Z", 0, "latent $z_1$"), ("invariants", 0, "invariant $r$"),
                            ("labels", None, "class")):
        v = task.meta.get(key)
        if v is not None and len(v) >= n:
            return (v[:n, col] if col is not None else v[:n]), label
    return None, ""


def _check_figure_path(path: Path) -> None:
    """Reject a figure path matplotlib cannot write (unknown format, missing or read-only
    folder) before any work is done."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    ext = path.suffix.lower().lstrip(".")
    if ext not in formats:
        raise ConfigError(f"--plot {path}: unknown figure format {path.suffix or '(none)'!r}; "
                          f"use one of {', '.join('.' + f for f in sorted(formats))}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--plot {path}: the folder {parent} does not exist or is not "
                          "writable")


def analyze_cmd(
    run_dirs: Annotated[list[Path] | None, typer.Argument(
        help="run directories written by bnstruct train, one table each (or use "
             "--model/--data)", show_default=False)] = None,
    model_spec: Annotated[str | None, typer.Option(
        "--model", help="your model: 'package.module:factory' (called with no arguments; "
        "this imports and runs that code: use only code you trust)")
    ] = None,
    weights: Annotated[Path | None, typer.Option(
        help="weights for --model: .safetensors, or a state_dict saved by torch.save")] = None,
    data: Annotated[Path | None, typer.Option(help="points for --model: X as a .npy file")
                    ] = None,
    layers: Annotated[str | None, typer.Option(
        help="comma-separated module names whose outputs are the representations")] = None,
    output: Annotated[str | None, typer.Option(
        help="which output to analyze when the model returns a tuple (index) or dict (key)")
    ] = None,
    k: Annotated[int | None, typer.Option(
        help="bottleneck rank to test (default: estimated from the network)")] = None,
    points: Annotated[int | None, typer.Option(
        help="analyze the first N training points (default: all)")] = None,
    hessian: Annotated[bool, typer.Option(
        help="also the top Hessian eigenvalue of the last stage's objective (slower)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print everything as strict JSON")
                       ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print the per-layer table (every "
                                                      "column) as CSV")] = False,
    all_columns: Annotated[bool, typer.Option("--all", help="show every column of the "
                                                            "per-layer table")] = False,
    plot: Annotated[Path | None, typer.Option(
        help="write the figures (weight spectra, representation ranks, PCA) to FILE")] = None,
) -> None:
    """Diagnose trained networks layer by layer: spectra, ranks, bound, NTK (float64); one
    table per run, and a warning when a net is not yet near a stationary point of its
    objective (its numbers should not be trusted)."""
    from ..diagnostics import analyze
    from ..loading import load_model, load_points
    from ..store import load_run

    if as_json and as_csv:
        raise ConfigError("--json and --csv exclude each other: choose one")
    if points is not None and points < 1:
        raise ConfigError(f"--points must be >= 1, got {points}")
    if plot is not None:
        _check_figure_path(plot)
    if model_spec is not None or data is not None:
        if run_dirs:
            raise ConfigError("give run directories or --model/--data, not both")
        if model_spec is None or data is None:
            raise ConfigError("--model and --data go together (and --weights, usually)")
        if hessian:
            raise ConfigError("--hessian needs the targets of a run: analyze a run directory")
        user = load_model(model_spec, weights, names=("--model", "--weights"))
        X = load_points(data, name="--data")
        if points is not None:
            if points > X.shape[0]:
                raise ConfigError(f"--points {points} exceeds the {X.shape[0]} points of "
                                  f"{data}")
            X = X[:points]
        sel: int | str | None = None
        if output is not None:
            sel = int(output) if output.lstrip("-").isdigit() else output
        names = None if layers is None else [n.strip() for n in layers.split(",") if n.strip()]
        a = analyze(user, X, k, layers=names, output=sel)
        a.summary["model_spec"] = model_spec
        if plot is not None:
            try:
                a.plot(plot)
            except OSError as e:
                raise ConfigError(f"cannot write --plot {plot}: {e.strerror or e}") from None
        _print_analysis(a, f"layers of {model_spec}", as_json=as_json, as_csv=as_csv,
                        all_columns=all_columns)
        if plot is not None and not (as_json or as_csv):
            out.print(f"figure written to {plot}", highlight=False)
        return
    if weights is not None or layers is not None or output is not None:
        raise ConfigError("--weights, --layers and --output go with --model/--data")
    if not run_dirs:
        raise ConfigError("give a run directory, or --model and --data")
    if plot is not None and len(run_dirs) > 1:
        raise ConfigError(f"--plot writes one figure: give one run, not {len(run_dirs)}")
    missing = [str(d) for d in run_dirs if not (Path(d) / "config.json").is_file()]
    if missing:
        raise ConfigError(f"not a run directory (no config.json): {', '.join(missing)}")
    several = len(run_dirs) > 1
    docs = []
    for i, run_dir in enumerate(run_dirs):
        r = load_run(run_dir)
        X, Y = r.task.X, r.task.Y
        if points is not None:
            if points > X.shape[0]:
                raise ConfigError(f"--points {points} exceeds the {X.shape[0]} training "
                                  f"points of {run_dir}")
            X, Y = X[:points], Y[:points]
        last = r.config.stages[-1]
        a = analyze(r.model, X, k, Y=Y, lam=last.lam, hessian=hessian, lr=last.lr)
        a.summary["run"] = str(r.path)
        a.summary["task_bn_rank"] = r.task.bn_rank
        if plot is not None:
            color, label = _pca_color(r.task, X.shape[0])
            try:
                a.plot(plot, color=color, color_label=label)
            except OSError as e:
                raise ConfigError(f"cannot write --plot {plot}: {e.strerror or e}") from None
        if as_json and several:
            docs.append(a.to_dict())
            continue
        if as_csv and several:
            df = a.layers.copy()
            df.insert(0, "run", r.path.name)
            sys.stdout.write(df.to_csv(index=False, header=i == 0))
            continue
        if i:
            out.print()
        _print_analysis(a, f"layers of {r.path}", as_json=as_json, as_csv=as_csv,
                        all_columns=all_columns)
    if docs:
        from .._io import dumps

        sys.stdout.write(dumps(docs) + "\n")
    if plot is not None and not (as_json or as_csv):
        out.print(f"figure written to {plot}", highlight=False)


#: the summary rows ``analyze`` shows by default (``--all``: every key)
SUMMARY_KEYS = ("k", "k_source", "task_bn_rank", "bottleneck_rank", "bottleneck_rank_method",
                "bottleneck_layers", "param_norm2_per_depth", "bound_slack_min",
                "ntk_max_eig_per_NL", "hessian_max_eig", "two_over_lr", "rel_fit",
                "rescaling_grad", "rel_grad", "implementation",
                # leaky ResNets (bnstruct.diagnostics.leaky_analysis)
                "leak", "hamiltonian_spread", "minus_2H_over_leak", "coi_min", "coi_min_p",
                "balance_spread", "nonneg_gap_middle", "coi_gamma0")
#: the per-layer columns ``analyze`` shows by default for a leaky ResNet (``--all``: every one)
LEAKY_TABLE = ("layer", "p", "coi", "coi_lower", "nonneg_gap", "rep_energy_rank", "kinetic",
               "potential", "hamiltonian", "speed_K", "w_s1", "w_s3", "w_s4")


def _print_analysis(a, title: str, *, as_json: bool, as_csv: bool,
                    all_columns: bool) -> None:
    from .._io import dumps

    if as_json:
        sys.stdout.write(dumps(a.to_dict()) + "\n")
        return
    if as_csv:
        sys.stdout.write(a.layers.to_csv(index=False))
        if a.representations is not None:
            sys.stdout.write("\n" + a.representations.to_csv(index=False))
        return
    if a.summary.get("implementation") == "leaky-resnet" and not all_columns:
        print_df(a.layers[list(LEAKY_TABLE)], title=title, key=["layer"])
    elif a.representations is not None and not all_columns:
        for tab in general_tables(a, title=title):
            out.print(tab, width=min(out.width, 100))
    elif all_columns:  # every column, in as many tables as the width needs (no cell cut)
        print_df(a.layers, title=title, key=["layer"] if "layer" in a.layers else ())
        if a.representations is not None:
            print_df(a.representations, title="representations", key=["rep"])
    else:
        out.print(analysis_table(a, title=title), width=min(out.width, 100))
    from rich import box

    t = Table(title="summary" + ("" if all_columns else " (--all: every quantity)"),
              header_style="bold", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    t.add_column("quantity", no_wrap=True)
    t.add_column("value", justify="right", overflow="fold")
    keys = [kk for kk in a.summary if kk not in ("thresholds", "conventions", "warning")] \
        if all_columns else [kk for kk in SUMMARY_KEYS if kk in a.summary]
    for key in keys:
        v = a.summary[key]
        if key == "bottleneck_rank_method" and not all_columns:
            v = str(v).split(":")[0]  # the rule's name; --all: its description
        t.add_row(key, f"{v:.6g}" if isinstance(v, float) else str(v))
    out.print(t)
    if all_columns:
        out.print("thresholds: " + ", ".join(f"{kk}={vv:g}" for kk, vv in
                                             a.summary["thresholds"].items()), highlight=False)
    if a.summary.get("warning"):
        from rich.text import Text

        out.print(Text.assemble(("warning: ", "bold yellow"), str(a.summary["warning"])))
