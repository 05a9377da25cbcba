"""Run directories and the store's SQLite index.

A store is a directory of runs plus ``index.sqlite`` (WAL mode). A run directory holds

- ``config.json``   the complete :class:`~bnstruct.config.RunConfig` plus package versions,
- ``weights.safetensors``  final weights (``model.state_dict()`` names),
- ``history.csv``   one row per logged step (:data:`~bnstruct.training.HISTORY_COLUMNS`),
- ``summary.json``  status (``completed`` | ``diverged`` | ``interrupted``), ``reason`` (why, when
  not completed), final metrics (strict JSON: non-finite values are ``null``),
- ``data.safetensors``  only for tasks loaded from a file (built-in tasks are rebuilt from
  their seed),
- ``checkpoint.*`` while a run is unfinished.

Every file is written to a temporary name and renamed, so a killed process never leaves a
half-written file. Nothing is ever unpickled.

The store is persistence only: run directories (:func:`write_result`, the one writer every
executor uses; :func:`load_run`), the index (:func:`runs`; paths relative to the store's root)
and the claims that let several drivers share a store (:func:`claim`). Training is
:mod:`bnstruct.executors`'.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ._io import atomic_write_bytes, dumps, jsonable
from .config import DTYPES, RunConfig, resolve_device
from .errors import BnstructError, ConfigError, RunExistsError
from .models import FeedForward, LeakyResNet
from .tasks import Task
from .training import TrainResult, TrainState, hold_sigint
from .training import checkpoint_step as _ck_step

__all__ = ["Run", "RunResult", "write_result", "load_run", "runs", "finished", "open_run",
           "check_name", "preparing", "rebuild_index", "read_json", "read_config",
           "CorruptRunError",
           "stored_task", "checkpoint_prefix", "checkpoint_step", "summarize",
           "config_record", "INDEX_COLUMNS", "reuse_run", "check_writable",
           "claim", "release", "claimed_by", "wait_for", "RunBusyError", "join_claims",
           "leave_claims", "pid_alive"]

INDEX = "index.sqlite"
INDEX_COLUMNS = {
    "name": "TEXT PRIMARY KEY", "path": "TEXT", "task": "TEXT", "model": "TEXT",
    "depth": "INTEGER", "width": "TEXT", "d_in": "INTEGER", "d_out": "INTEGER",
    "n_train": "INTEGER", "k": "INTEGER", "optimizer": "TEXT", "lr": "REAL", "lam": "REAL",
    "steps": "INTEGER", "seed": "INTEGER", "dtype": "TEXT", "status": "TEXT", "step": "INTEGER",
    "seconds": "REAL", "fit": "REAL", "rel_fit": "REAL", "test_error": "REAL",
    "rel_test_error": "REAL", "param_norm2": "REAL", "objective": "REAL",
    "norm2_per_kL": "REAL", "digest": "TEXT", "created": "TEXT", "config_json": "TEXT",
}


def _versions() -> dict[str, str]:
    from . import __version__

    return {"bnstruct": __version__, "torch": torch.__version__,
            "python": platform.python_version()}


def _open_index(root: Path) -> sqlite3.Connection:
    con = sqlite3.connect(root / INDEX, timeout=60)
    try:
        con.execute("PRAGMA busy_timeout=60000")  # concurrent drivers wait, never fail
        con.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f'"{k}" {v}' for k, v in INDEX_COLUMNS.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
        con.execute("SELECT count(*) FROM runs").fetchone()
    except sqlite3.DatabaseError:
        con.close()
        raise
    return con


@contextmanager
def _index(root: Path) -> Iterator[sqlite3.Connection]:
    """The index, read-write; a corrupt one is rebuilt from the run directories first
    (:func:`rebuild_index`: they are the truth)."""
    try:
        con = _open_index(root)
    except sqlite3.DatabaseError:
        rebuild_index(root)
        con = _open_index(root)
    try:
        yield con
        con.commit()
    finally:
        con.close()


def rebuild_index(root: str | Path) -> int:
    """Set a corrupt (or lost) index aside (``index.sqlite.corrupt``) and index every run
    directory of ``root`` again; returns the number of runs indexed. A run directory that
    cannot be read is skipped (``load_run`` names what is wrong with it)."""
    root = Path(root)
    for suffix in ("", "-wal", "-shm"):
        f = root / f"{INDEX}{suffix}"
        if f.exists():
            os.replace(f, root / f"{INDEX}{suffix}.corrupt")
    rows = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (d / "summary.json").exists():
            try:
                r = load_run(d)
            except BnstructError:
                continue
            rows.append(_index_row(d, r.config, r.task, r.summary))
    con = _open_index(root)
    try:
        for row in rows:
            cols = ", ".join(f'"{c}"' for c in row)
            con.execute(f"INSERT OR REPLACE INTO runs ({cols}) VALUES "
                        f"({', '.join('?' for _ in row)})", list(row.values()))
        con.commit()
    finally:
        con.close()
    return len(rows)


def _index_row(path: Path, config: RunConfig, task: Task, summary: dict[str, Any]
               ) -> dict[str, Any]:
    last = config.stages[-1]
    m = config.model
    fin = summary.get("final", {})
    k = task.bn_rank
    return {
        "name": path.name, "path": path.name, "task": config.task.name,
        "model": m.kind, "depth": m.depth,
        "width": str(m.width if isinstance(m.width, int) else list(m.width)),
        "d_in": task.d_in, "d_out": task.d_out, "n_train": task.n_train, "k": k,
        "optimizer": last.optimizer, "lr": last.lr, "lam": last.lam, "steps": config.steps,
        "seed": config.seed, "dtype": config.dtype, "status": summary["status"],
        "step": summary["step"], "seconds": summary["seconds"], "fit": fin.get("fit"),
        "rel_fit": fin.get("rel_fit"), "test_error": fin.get("test_error"),
        "rel_test_error": fin.get("rel_test_error"), "param_norm2": fin.get("param_norm2"),
        "objective": fin.get("objective"),
        "norm2_per_kL": (fin["param_norm2"] / (k * m.depth)
                         if k and fin.get("param_norm2") is not None else None),
        "digest": config.digest(), "created": summary.get("created"),
        "config_json": json.dumps(config.to_dict(), sort_keys=True),
    }


def _register(root: Path, row: dict[str, Any]) -> None:
    cols = ", ".join(f'"{c}"' for c in row)
    qs = ", ".join("?" for _ in row)
    with _index(root) as con:
        con.execute(f"INSERT OR REPLACE INTO runs ({cols}) VALUES ({qs})", list(row.values()))


def _indexed(root: Path, name: str) -> bool:
    if not (root / INDEX).exists():
        return False
    with _index(root) as con:
        return con.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone() is not None


def reuse_run(path: str | Path) -> Run:
    """A finished run found in the store: loaded, and indexed if it is not (a run directory is
    renamed into place before it is indexed, so a writer killed in between leaves a finished
    but unindexed run; reusing it heals the index)."""
    r = load_run(path)
    root = r.path.parent
    if not _indexed(root, r.path.name):
        _register(root, _index_row(r.path, r.config, r.task, r.summary))
    return r


@dataclass
class Run:
    """A run loaded from (or just written to) its directory."""

    path: Path
    config: RunConfig
    #: a :class:`~bnstruct.models.FeedForward` chain, or a :class:`~bnstruct.LeakyResNet`
    model: FeedForward | LeakyResNet
    task: Task
    history: pd.DataFrame
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.summary["status"])


def stored_task(config: RunConfig, path: str | Path, *, started: bool = False) -> Task:
    """The task of run directory ``path``: its stored copy of the data
    (``data.safetensors``, tasks loaded from a file), else rebuilt from ``config`` (a file
    task's file is checked against the fingerprint in the config). ``started``: the run has
    trained, so a file task's stored copy must be there; a missing one is an error, never
    replaced by the file as it is now."""
    data = Path(path) / "data.safetensors"
    if data.exists():
        from safetensors.torch import load_file

        t = load_file(str(data))
        return Task(config.task.name, t["X"], t["Y"], t["X_test"], t["Y_test"], None, {})
    if started and config.task.data is not None:
        raise BnstructError(f"run {path} was trained on {config.task.data}, but its copy of "
                            f"that data ({data}) is missing: the run cannot be read without "
                            "the data it was trained on")
    return config.task.build()


def check_writable(root: Path) -> None:
    """Create ``root`` if needed and check that this process can write to it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to the store {root} ({e.strerror}): choose another "
                          "store directory") from None


def summarize(res: TrainResult, *, created: str, device: str, bn_rank: int | None
              ) -> dict[str, Any]:
    """The ``summary.json`` record of a training result.

    Strict JSON: a non-finite final metric (a diverged run) is written as ``null``, and
    ``reason`` says why (``None`` for a completed run)."""
    reason = None
    if res.status == "diverged":
        reason = (f"the training loss or the parameters became non-finite at step "
                  f"{res.diverged_at}; non-finite final metrics are null")
    elif res.status == "interrupted":
        reason = (f"interrupted at step {res.steps}: resume it (resume=True, CLI --resume, or "
                  "the same sweep again)")
    return jsonable({"status": res.status, "reason": reason, "step": res.steps,
            "diverged_at": res.diverged_at, "seconds": res.seconds, "final": res.final,
            "created": created, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "device": device, "bn_rank": bn_rank})


FINISHED = ("completed", "diverged")


class CorruptRunError(BnstructError):
    """A file of a run directory (or a checkpoint) cannot be read: the message names it."""


def _fix(path: Path) -> str:
    return f"delete {path.parent} to train the run again"


def read_json(path: Path, what: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON object in ``path`` (a run's ``what``) with ``keys``; a missing, unreadable or
    malformed file raises :class:`CorruptRunError` naming it."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptRunError(f"{path}: the run's {what} is missing; {_fix(path)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRunError(f"{path}: the run's {what} is not valid JSON "
                              f"({type(e).__name__}); {_fix(path)}") from None
    if not isinstance(d, dict) or any(k not in d for k in keys):
        raise CorruptRunError(f"{path}: the run's {what} is not a JSON object with "
                              f"{', '.join(keys) or 'fields'}; {_fix(path)}")
    return d


def finished(path: str | Path) -> bool:
    """Whether ``path`` holds a finished run (status ``completed`` or ``diverged``)."""
    summ = Path(path) / "summary.json"
    return summ.exists() and read_json(summ, "summary", ("status",))["status"] in FINISHED


def checkpoint_prefix(path: str | Path) -> Path:
    """The checkpoint prefix of run directory ``path`` (``checkpoint.safetensors``)."""
    return Path(path) / "checkpoint"


def checkpoint_step(path: str | Path) -> int:
    """The step of run directory ``path``'s checkpoint (0 when it has none)."""
    return _ck_step(checkpoint_prefix(path))


def task_bytes(task: Task) -> bytes:
    """The ``data.safetensors`` bytes of a task loaded from a file."""
    from safetensors.torch import save as save_bytes

    return bytes(save_bytes({k: v.detach().cpu().contiguous() for k, v in
                             (("X", task.X), ("Y", task.Y), ("X_test", task.X_test),
                              ("Y_test", task.Y_test))}))


def check_name(root: Path, name: str) -> Path:
    """``root / name`` for a run name that is one directory of the store: no path
    separator, not ``.``, ``..`` or empty, nothing that resolves outside ``root``."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\0" in name or name.startswith(".")):
        raise ConfigError(f"run name {name!r} must be one directory name inside the store "
                          "(no path separators, not '.', '..' or hidden)")
    path = root / name
    if path.resolve().parent != root.resolve():
        raise ConfigError(f"run name {name!r} resolves outside the store {root}")
    return path


def _started(path: Path) -> bool:
    """Whether run directory ``path`` holds more than its ``config.json``: a checkpoint or a
    result (a run that crashed before its first step leaves only the config)."""
    return (path / "summary.json").exists() or (checkpoint_prefix(path).with_suffix(
        ".safetensors")).exists()


@contextmanager
def preparing(paths: Sequence[Path]) -> Iterator[None]:
    """A block that trains the runs in ``paths``: if it raises (a crash, not a stop), the
    directories it leaves with nothing but their ``config.json`` (never started) are
    removed, so a crash before the first step leaves nothing behind."""
    fresh = [p for p in paths if not p.exists()]
    try:
        yield
    except BaseException:
        for p in fresh:
            if p.is_dir() and not _started(p) and {f.name for f in p.iterdir()} <= {
                    "config.json", "data.safetensors"}:
                shutil.rmtree(p, ignore_errors=True)
        raise


def open_run(config: RunConfig, root: Path, name: str, resume: bool) -> Path:
    """The run directory for ``config`` (checked, not created); raises
    :class:`RunExistsError` when it exists and cannot be continued (``resume`` false, or
    another configuration). A directory a crash left before the first step (only its
    ``config.json``) is no run yet: it is reused."""
    path = check_name(Path(root), name)
    if path.exists() and (path / "config.json").exists():
        same = read_config(path).digest() == config.digest()
        if not _started(path) and same:
            return path
        if not resume:
            raise RunExistsError(f"run {path} already exists: resume it (resume=True, CLI "
                                 "--resume) or choose another name")
        if not same:
            raise RunExistsError(f"run {path} exists with a different configuration: choose "
                                 "another name")
    return path


def prepare(config: RunConfig, root: Path, path: Path, task: Task) -> None:
    """Create run directory ``path`` with its ``config.json`` (and the task's data when it
    came from a file) before training starts, so a stopped run can be resumed."""
    check_writable(root)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "config.json").exists():
        atomic_write_bytes(path / "config.json", config_record(config, task).encode())
        if config.task.data is not None:
            atomic_write_bytes(path / "data.safetensors", task_bytes(task))


def load_run(path: str | Path, *, device: str = "cpu") -> Run:
    """Load a run directory: model (weights from safetensors), task, config, history, summary."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").exists():
        raise BnstructError(f"{path} is not a run directory (no config.json)")
    config = read_config(path)
    summ = path / "summary.json"
    if not summ.exists() or not (path / "weights.safetensors").exists():
        raise BnstructError(f"run {path} has not finished (no summary/weights): resume it "
                            "(resume=True, CLI bnstruct train ... --resume)")
    summary = read_json(summ, "summary", ("status", "step", "final", "seconds"))
    task = stored_task(config, path, started=True)
    dev = resolve_device(device)
    model = config.model.build(task.d_in, task.d_out, seed=config.seed,
                               dtype=DTYPES[config.dtype], device=dev)
    assert isinstance(model, FeedForward | LeakyResNet)  # every registered family
    w = path / "weights.safetensors"
    try:
        model.load_state_dict(load_file(str(w), device=str(dev)))
    except Exception as e:  # noqa: BLE001 - safetensors' and torch's errors, named
        raise CorruptRunError(f"{w}: the run's weights cannot be read ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}"
                              f"); {_fix(w)}") from None
    return Run(path, config, model, task, _read_history(path), summary)


def read_config(path: Path) -> RunConfig:
    """The :class:`RunConfig` of run directory ``path`` (``config.json``, validated)."""
    f = path / "config.json"
    meta = read_json(f, "configuration", ("config",))
    try:
        return RunConfig.from_dict(meta["config"])
    except (BnstructError, TypeError, KeyError, ValueError) as e:
        raise CorruptRunError(f"{f}: the run's configuration is invalid ({e}); "
                              f"{_fix(f)}") from None


def _read_history(path: Path) -> pd.DataFrame:
    f = path / "history.csv"
    try:
        return pd.read_csv(f)
    except FileNotFoundError:
        raise CorruptRunError(f"{f}: the run's history is missing; {_fix(f)}") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise CorruptRunError(f"{f}: the run's history cannot be read ({type(e).__name__}); "
                              f"{_fix(f)}") from None


def _read_index(root: Path) -> sqlite3.Connection:
    """The index, read-only: a corrupt one is rebuilt when the store is writable (else an
    error naming it); a read-only store is read as an immutable file."""
    f = root / INDEX
    for uri in (f"file:{f}?mode=ro", f"file:{f}?immutable=1"):
        try:
            con = sqlite3.connect(uri, uri=True)
            con.execute("SELECT count(*) FROM runs").fetchone()
            return con
        except sqlite3.OperationalError as e:
            con.close()
            if "no such table" in str(e):
                break
            continue  # a read-only directory: WAL needs its -shm file
        except sqlite3.DatabaseError:
            con.close()
            break
    if not os.access(root, os.W_OK):
        raise CorruptRunError(f"{f}: the store's index cannot be read and the store is "
                              "read-only: copy the store somewhere writable to rebuild it")
    rebuild_index(root)
    return sqlite3.connect(f"file:{f}?mode=ro", uri=True)


def runs(store: str | Path = "runs", where: str | None = None) -> pd.DataFrame:
    """The store's index as a DataFrame, optionally filtered by an SQL ``WHERE`` clause over
    :data:`INDEX_COLUMNS` (e.g. ``"task = 'composite' AND depth >= 10"``).

    The index keeps each run's path relative to the store's root, so a store that was
    copied or moved keeps working; ``path`` here is that directory under ``store`` now."""
    root = Path(store)
    if not (root / INDEX).exists():
        raise BnstructError(f"{root} is not a bnstruct store (no {INDEX})")
    q = "SELECT * FROM runs" + (f" WHERE {where}" if where else "") + " ORDER BY name"
    con = _read_index(root)
    try:
        df = pd.read_sql_query(q, con)
    except (sqlite3.OperationalError, pd.errors.DatabaseError) as e:
        raise BnstructError(f"bad where clause {where!r}: {e}") from None
    finally:
        con.close()
    df["path"] = [str((root / p).resolve()) for p in df["path"]]
    return df


# --- concurrency: one claim per run -------------------------------------------------------

LOCKS = ".locks"


class RunBusyError(BnstructError):
    """The run is being trained by another process (it holds the run's claim)."""


def _lock_path(root: Path, name: str) -> Path:
    return root / LOCKS / f"{name}.lock"


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _workers(lock: Path) -> list[Path]:
    """The worker files of a claim: ``<name>.lock.w<pid>``, one per worker process that
    trains the run for the claim's holder (:func:`join_claims`)."""
    return sorted(lock.parent.glob(f"{lock.name}.w*"))


def _held(lock: Path, held: dict[str, Any]) -> bool:
    """Whether a claim of this host is live: its holder runs, or one of its workers does (a
    worker that outlives a killed driver stops at its next step boundary; until then the
    run is not free)."""
    if pid_alive(int(held["pid"])):
        return True
    for w in _workers(lock):
        info = _read_lock(w)
        if info is not None and info.get("host") == socket.gethostname() and pid_alive(
                int(info["pid"])):
            return True
        w.unlink(missing_ok=True)  # a dead worker's file
    return False


def join_claims(root: str | Path, names: Sequence[str]) -> None:
    """Mark this process as a worker of the claims on ``names`` (held by its driver), so that
    the claims stay live while it trains, even if the driver dies first."""
    for name in names:
        lock = _lock_path(Path(root), name)
        lock.parent.mkdir(parents=True, exist_ok=True)
        w = lock.with_name(f"{lock.name}.w{os.getpid()}")
        atomic_write_bytes(w, json.dumps(_holder()).encode())


def leave_claims(root: str | Path, names: Sequence[str]) -> None:
    """Undo :func:`join_claims`."""
    for name in names:
        lock = _lock_path(Path(root), name)
        lock.with_name(f"{lock.name}.w{os.getpid()}").unlink(missing_ok=True)


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(lock.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def claim(root: str | Path, name: str) -> bool:
    """Claim run ``name`` of store ``root`` for this process: atomically create
    ``root/.locks/<name>.lock`` (``O_CREAT | O_EXCL``) holding pid and host. Returns ``False``
    when another live process holds it. A claim left by a dead process of this host is
    stale once its workers are gone too (:func:`join_claims`): it is then broken (renamed
    away, so two breakers cannot both win) and retaken."""
    lock = _lock_path(Path(root), name)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read_lock(lock)
            if held is None:  # being written this instant, or just released
                time.sleep(0.05)
                continue
            if held.get("host") != socket.gethostname() or _held(lock, held):
                return False
            stale = lock.with_name(f"{lock.name}.stale.{os.getpid()}")
            try:
                os.rename(lock, stale)
            except FileNotFoundError:
                continue
            if _read_lock(stale) != held:  # renamed a fresh claim: give it back
                try:
                    os.link(stale, lock)
                except FileExistsError:
                    pass
            stale.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(_holder()))
        return True
    return False


def release(root: str | Path, name: str) -> None:
    """Drop this process's claim on run ``name`` (no-op when it holds none)."""
    lock = _lock_path(Path(root), name)
    held = _read_lock(lock)
    if held is not None and held.get("pid") == os.getpid() \
            and held.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


def claimed_by(root: str | Path, name: str) -> str | None:
    """``"pid N on HOST"`` for a claimed run, else ``None``."""
    held = _read_lock(_lock_path(Path(root), name))
    return None if held is None else f"pid {held.get('pid')} on {held.get('host')}"


def wait_for(root: str | Path, names: Sequence[str], *, poll: float = 0.2) -> list[str]:
    """Wait until each run of ``names`` is finished or no longer claimed by a live process;
    returns the names that are unclaimed but unfinished (their trainer stopped: train them)."""
    root = Path(root)
    left = list(names)
    orphans: list[str] = []
    while left:
        still = []
        for n in left:
            if finished(root / n):
                continue
            lock = _lock_path(root, n)
            held = _read_lock(lock)
            if held is None or (held.get("host") == socket.gethostname()
                                and not _held(lock, held)):
                orphans.append(n)
            else:
                still.append(n)
        left = still
        if left:
            time.sleep(poll)
    return orphans


# --- the seam: train in memory, write on the driver ---------------------------------------

@dataclass(frozen=True)
class RunResult:
    """One run trained in memory (:func:`bnstruct.executors.train_group`), ready to be written by
    :func:`write_result` on another machine: everything is bytes, strings or JSON values.

    ``config_json`` is the text of ``config.json``; ``weights`` the ``weights.safetensors``
    bytes; ``history_csv`` the text of ``history.csv``; ``summary`` the ``summary.json``
    record (``status`` ``completed``, ``diverged`` or ``interrupted``); ``data`` the
    ``data.safetensors`` bytes for tasks loaded from a file."""

    name: str
    config_json: str
    weights: bytes
    history_csv: str
    summary: dict[str, Any]
    data: bytes | None = None

    @property
    def status(self) -> str:
        return str(self.summary["status"])


def config_record(config: RunConfig, task: Task) -> str:
    """The text of ``config.json``: the configuration, package versions, the task's
    bottleneck rank and data fingerprint."""
    return dumps({"config": config.to_dict(), "versions": _versions(), "bn_rank": task.bn_rank,
                  "fingerprint": task.fingerprint()})


def write_result(store: str | Path, result: RunResult) -> Run:
    """Write ``result`` as run directory ``store/<name>`` and index it (one transaction).

    A new directory is assembled under a temporary name and renamed into place, so readers
    never see half a run; an existing unfinished one (an interrupted local run) gets each
    file atomically, ``summary.json`` last, and loses its checkpoint."""
    root = Path(store)
    check_writable(root)
    path = root / result.name
    files: list[tuple[str, bytes]] = [("config.json", result.config_json.encode())]
    if result.data is not None:
        files.append(("data.safetensors", result.data))
    files += [("history.csv", result.history_csv.encode()),
              ("weights.safetensors", result.weights),
              ("summary.json", dumps(result.summary).encode())]
    with hold_sigint():  # the directory and its index row, or neither (up to a kill)
        return _place(root, path, files, result.status in FINISHED)


def _place(root: Path, path: Path, files: list[tuple[str, bytes]], done: bool) -> Run:
    """Write ``files`` as run directory ``path`` (:func:`write_result`) and index it."""
    placed = False
    if not path.exists():
        tmp = root / f".{path.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for fname, data in files:
            (tmp / fname).write_bytes(data)
        try:
            os.rename(tmp, path)
            placed = True
        except OSError:  # the directory appeared meanwhile: write into it below
            shutil.rmtree(tmp, ignore_errors=True)
    if not placed:
        for fname, data in files:  # summary.json last: a reader sees a finished run or none
            atomic_write_bytes(path / fname, data)
    if done:
        TrainState.remove(checkpoint_prefix(path))
    r = load_run(path)
    _register(root, _index_row(path, r.config, r.task, r.summary))
    return r
