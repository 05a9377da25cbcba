"""``bnstruct reproduce``: every claim's runs planned, trained, measured; the claims table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ..errors import ConfigError
from ._app import ADDRESS, CPUS, EXECUTOR, GPUS, err, make_executor, out


def closing(claims, mode: str, out_dir: Path, width: int | None = None) -> list[Text]:
    """What ``reproduce`` ends with: the headline, one line per claim (name, verdict, its key
    number; cut with an ellipsis at ``width``, default the terminal's, never wrapped), and
    where the report and claims.md are."""
    from ..report import headline, verdict_word

    width = width or out.width
    style = {"PASS": "green", "FAIL": "bold red", "FINDING": "blue", "ERROR": "bold red"}
    pad = max((len(c.name) for c in claims), default=0)
    lines = [Text(f"bnstruct reproduce --{mode}: {headline(claims)}", style="bold")]
    for c in claims:
        w = verdict_word(c)
        line = Text.assemble(c.name.ljust(pad), "  ", (w.ljust(7), style[w]), "  ",
                             f"error: {c.error}" if c.error is not None else (c.key or "-"))
        line.truncate(width, overflow="ellipsis")
        lines.append(line)
    lines += [Text(f"report: {out_dir / 'report.html'}"),
              Text(f"claims: {out_dir / 'claims.md'} (the full measurements, and why a claim "
                   "fails)")]
    return lines


def reproduce_cmd(
    quick: Annotated[bool, typer.Option("--quick", help="every claim on a 2-core CPU "
                                        "(<= 15 min; the default)")] = False,
    full: Annotated[bool, typer.Option("--full", help="the paper's scale (meant for a GPU)")
                    ] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny sizes, < 2 min: checks the "
                                        "pipeline, exit 0 when every experiment ran")] = False,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="run only this experiment (repeatable)")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="output directory (runs, figures, "
                                          "claims.json/md, report.html)")] = Path("reproduce"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "cpu",
    executor: Annotated[str, EXECUTOR] = "local",
    address: Annotated[str | None, ADDRESS] = None,
    cpus_per_task: Annotated[float, CPUS] = 1.0,
    gpus_per_task: Annotated[float, GPUS] = 0.0,
) -> None:
    """Reproduce the paper's claims: a claims table with measured numbers, figures and an
    HTML report. Every claim's training runs are planned first and trained together, then
    each claim is measured. Exit 0 when every claim passes, 1 otherwise (the report is written
    either way); with --smoke, 0 when every experiment ran to a verdict (no error)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from ..config import resolve_device
    from ..experiments import EXPERIMENTS
    from ..report import reproduce

    if sum((quick, full, smoke)) > 1:
        raise ConfigError("choose at most one of --quick, --full, --smoke")
    mode = "full" if full else "smoke" if smoke else "quick"
    resolve_device(device)
    ex = make_executor(executor, address=address, cpus_per_task=cpus_per_task,
                       gpus_per_task=gpus_per_task)
    names = list(only) if only else list(EXPERIMENTS)
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise ConfigError(f"unknown experiment(s) {bad}: choose from {', '.join(EXPERIMENTS)}")
    bar = Progress(TextColumn("[bold]reproduce"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err)
    with bar:
        tid = bar.add_task("reproduce", total=len(names), info="")
        claims = reproduce(
            mode, out_dir, only=names, device=device,
            on_start=lambda n: bar.update(tid, info=n),
            on_note=lambda m: bar.update(tid, info=m),
            on_done=lambda c: bar.advance(tid),
            executor=ex)  # type: ignore[arg-type]
    for line in closing(claims, mode, out_dir):
        out.print(line, highlight=False)
    if mode == "smoke":  # the pipeline ran: no experiment crashed
        raise typer.Exit(0 if all(c.error is None for c in claims) else 1)
    raise typer.Exit(0 if all(c.passed for c in claims) else 1)
