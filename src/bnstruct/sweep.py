"""Run configurations from ``bnstruct train``'s options, and grids of them (``bnstruct sweep``).

One point: :func:`config_from` turns the options of ``bnstruct train`` into a
:class:`~bnstruct.config.RunConfig` (the same function serves ``train`` and ``sweep``, so a
sweep point and the equivalent ``train`` call name the same run).

A grid: every option of :data:`GRID_OPTIONS` takes one value, a comma list (``0.005,0.01``)
or, for integers, an inclusive range (``0-4``); the grid is the Cartesian product, in the
order of :data:`GRID_OPTIONS` (the last option varies fastest). A hidden-width list of one
network is written with ``x`` (``32x32x16``), since a comma separates grid values. The same
options can come from a TOML spec file (:func:`load_spec`), whose values are a scalar, a
list, or a string in the command-line syntax; options given on the command line override it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DTYPES, ModelSpec, RunConfig, resolve_device
from .errors import ConfigError
from .tasks import TASKS, Task, TaskSpec
from .training import Stage, default_recipe, parse_stage

__all__ = ["config_from", "GRID_OPTIONS", "FIXED_OPTIONS", "parse_values", "load_spec",
           "grid", "Point"]


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--{name}: {text!r} is not an integer") from None


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--{name}: {text!r} is not a number") from None


def _width(name: str, text: str) -> int | tuple[int, ...]:
    try:
        ws = tuple(int(w) for w in text.split("x"))
    except ValueError:
        raise ConfigError(f"--{name}: {text!r} must be an integer or a list like 32x32x16"
                          ) from None
    return ws[0] if len(ws) == 1 else ws


def _str(name: str, text: str) -> str:
    return text.strip()


#: grid options (``bnstruct train``'s flags, underscores for dashes) and their value parsers
GRID_OPTIONS: dict[str, Callable[[str, str], Any]] = {
    "task": _str, "model": _str, "k": _int, "n_train": _int, "n_test": _int, "d_in": _int,
    "d_out": _int, "data_seed": _int, "depth": _int, "width": _width, "optimizer": _str,
    "steps": _int, "lam": _float, "lr": _float, "seed": _int, "dtype": _str,
    "leak": _float, "adapt_every": _int,
}
#: options that take one value in a sweep
FIXED_OPTIONS = ("data", "stage", "device", "log_every", "checkpoint_every")

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
#: the most runs one sweep may list
MAX_POINTS = 100_000


def parse_values(name: str, value: Any) -> list[Any]:
    """The list of values of grid option ``name`` from a command-line string (one value,
    ``a,b,c``, or ``lo-hi`` for integers), a TOML scalar or a TOML list."""
    if name not in GRID_OPTIONS:
        raise ConfigError(f"unknown sweep option {name!r}; grid options: "
                          f"{', '.join(GRID_OPTIONS)}; fixed: {', '.join(FIXED_OPTIONS)}")
    parse = GRID_OPTIONS[name]
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = [v for v in value.split(",")]
    else:
        items = [value]
    out: list[Any] = []
    for it in items:
        if isinstance(it, bool) or not isinstance(it, str | int | float):
            raise ConfigError(f"--{name}: {it!r} is not a value")
        text = str(it).strip()
        if not text:
            raise ConfigError(f"--{name}: empty value in {value!r}")
        m = _RANGE.match(text)
        if m and parse is _int:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ConfigError(f"--{name}: empty range {text!r}")
            if hi - lo + 1 > MAX_POINTS:
                raise ConfigError(f"--{name}: the range {text!r} has {hi - lo + 1} values; a "
                                  f"sweep has at most {MAX_POINTS} runs")
            out.extend(range(lo, hi + 1))
        elif isinstance(it, float) and parse is _int:
            raise ConfigError(f"--{name}: {it!r} is not an integer")
        else:
            out.append(parse(name, text))
    if len(set(map(repr, out))) != len(out):
        raise ConfigError(f"--{name}: repeated value in {value!r}")
    return out


def load_spec(path: str | Path) -> dict[str, Any]:
    """A sweep spec from a TOML file: ``{option: value}`` (top level, or under ``[sweep]``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    p = Path(path)
    try:
        d = tomllib.loads(p.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read sweep spec {p}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sweep spec {p} is not UTF-8 text (TOML must be)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"sweep spec {p} is not valid TOML: {e}") from None
    if set(d) == {"sweep"} and isinstance(d["sweep"], dict):
        d = d["sweep"]
    bad = [k for k in d if k not in GRID_OPTIONS and k not in FIXED_OPTIONS and k != "name"]
    if bad:
        raise ConfigError(f"sweep spec {p}: unknown key(s) {bad}; grid options: "
                          f"{', '.join(GRID_OPTIONS)}; fixed: {', '.join(FIXED_OPTIONS)}")
    return d


def config_from(*, task: str = "composite", data: str | Path | None = None,
                model: str = "mlp", k: int | None = None, n_train: int | None = None,
                n_test: int | None = None, d_in: int | None = None, d_out: int | None = None,
                data_seed: int = 0, depth: int = 12, width: int | tuple[int, ...] = 64,
                lam: float = 0.005, lr: float | None = None, optimizer: str = "adam",
                steps: int = 6000, stage: Sequence[str] | None = None, seed: int = 0,
                device: str = "auto", dtype: str = "float32", log_every: int = 100,
                checkpoint_every: int = 1000, leak: float | None = None,
                adapt_every: int | None = None) -> tuple[RunConfig, Task | None]:
    """The :class:`RunConfig` of ``bnstruct train``'s options (validated, with messages that
    name the option), and the task when it comes from a ``data`` file (else ``None``: the
    config rebuilds it). ``leak`` / ``adapt_every``: ``--model leaky-resnet`` only."""
    for nm, v in (("depth", depth), ("steps", steps), ("log-every", log_every),
                  ("checkpoint-every", checkpoint_every)):
        if v < 1:
            raise ConfigError(f"--{nm} must be >= 1, got {v}")
    if lam < 0:
        raise ConfigError(f"--lam must be >= 0, got {lam}")
    if lr is not None and lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")
    if optimizer not in ("adam", "gd"):
        raise ConfigError(f"--optimizer must be adam or gd, got {optimizer!r}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    resolve_device(device)
    kwargs: dict[str, object] = {"seed": data_seed}
    the_task = None
    if data is not None:
        data = Path(data)
        if k is not None or d_in is not None or d_out is not None:
            raise ConfigError("--k/--d-in/--d-out do not apply to --data (the file fixes them)")
        spec = TaskSpec.from_file(data, seed=data_seed)
        the_task = spec.build()
        if n_train is not None or n_test is not None:
            raise ConfigError("--n-train/--n-test do not apply to --data: subsample the file")
    else:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
        for opt_name, ov in (("k", k), ("n_train", n_train), ("n_test", n_test),
                             ("d_in", d_in), ("d_out", d_out)):
            if ov is not None:
                kwargs[opt_name] = ov
        spec = TaskSpec(task, tuple(sorted(kwargs.items())))
    if stage:
        stages = tuple(parse_stage(s) for s in stage)
    elif optimizer == "gd":
        stages = (Stage("gd", lr if lr is not None else 0.05, lam, steps),)
    else:
        stages = default_recipe(lam=lam, steps=steps, lr=lr if lr is not None else 1.5e-3)
    if model == "leaky-resnet" and leak is None:
        raise ConfigError("--model leaky-resnet needs --leak (the effective depth Lt), e.g. "
                          "--leak 4")
    if model != "leaky-resnet" and (leak is not None or adapt_every is not None):
        raise ConfigError("--leak and --adapt-every go with --model leaky-resnet")
    cfg = RunConfig(task=spec, model=ModelSpec(model, width, depth, leak=leak,
                                               adapt_every=adapt_every), stages=stages,
                    seed=seed, log_every=log_every, checkpoint_every=checkpoint_every,
                    dtype=dtype, device=device)
    return cfg, the_task


@dataclass(frozen=True)
class Point:
    """One point of a grid: its option values and its run configuration."""

    values: Mapping[str, Any]
    config: RunConfig


def grid(options: Mapping[str, Any]) -> list[Point]:
    """The grid of ``options`` (grid options: a value, list or command-line string each;
    fixed options: one value), every point validated and its task built once, so a bad
    spec fails before anything trains. Duplicate points (equal configs) are kept once."""
    axes: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for name, v in options.items():
        if v is None or name == "name":
            continue
        if name in FIXED_OPTIONS:
            fixed[name] = v
        else:
            axes[name] = parse_values(name, v)
    if "stage" in fixed:
        clash = [a for a in ("lam", "lr", "optimizer", "steps") if a in axes]
        if clash:
            raise ConfigError(f"--stage fixes the stages; it cannot be combined with "
                              f"{', '.join('--' + a for a in clash)}")
        st = fixed["stage"]
        fixed["stage"] = [st] if isinstance(st, str) else list(st)
    names = [n for n in GRID_OPTIONS if n in axes]
    size = 1
    for n in names:
        size *= len(axes[n])
    if size > MAX_POINTS:
        raise ConfigError(f"the grid has {size} runs; a sweep has at most {MAX_POINTS}: split "
                          "it")
    for fname, v in fixed.items():
        ok = (isinstance(v, str) if fname in ("data", "device") else
              isinstance(v, str | list) if fname == "stage" else
              isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            raise ConfigError(f"--{fname.replace('_', '-')}: {v!r} is not a valid value")
    points: list[Point] = []
    seen: set[str] = set()
    built: set[str] = set()
    for combo in itertools.product(*(axes[n] for n in names)):
        vals = dict(zip(names, combo, strict=True))
        cfg, _ = config_from(**fixed, **vals)
        key = repr(sorted(cfg.task.to_dict().items()))
        if key not in built:  # a task option the builder rejects fails here, before training
            cfg.task.build()
            built.add(key)
        name = cfg.default_name()
        if name not in seen:
            seen.add(name)
            points.append(Point(vals, cfg))
    if not points:
        raise ConfigError("the sweep is empty")
    return points
