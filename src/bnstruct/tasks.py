r"""Data with a known bottleneck rank, and real data shipped with a package.

Every builder is deterministic in its ``seed`` (a private ``torch.Generator``; the global RNG is
never touched) and returns a :class:`Task` with train and test splits in float64.

Scaling convention for the generated nonlinear tasks (``composite``, ``teacher``, ``symmetry``):
inputs and outputs are centered and scaled by one global factor each so that
:math:`\mathbb E\|x\|^2 = \mathbb E\|y\|^2 = 1` on the train split (Gaussian inputs are only
scaled). A global scale is a rank-preserving linear map, so ``bn_rank`` is unchanged. The scale
matters at finite depth: with :math:`\mathbb E\|y\|^2 = d_{out}` the hidden representations sit
far from the origin and carrying that offset through the weights costs about one extra singular
value per layer (a ``k+1``-dimensional bottleneck at depths 6-24); at unit scale the offset is
cheap to carry in the biases and the learned bottleneck is ``k``-dimensional.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DataError

__all__ = ["Task", "TaskSpec", "make_task", "TASKS", "composite", "teacher", "symmetry", "linear",
           "digits", "from_npz"]


@dataclass(frozen=True, eq=False)
class Task:
    """A regression task: ``X [N, d_in]``, ``Y [N, d_out]`` and a test split.

    ``bn_rank`` is the bottleneck rank of the target when known by construction (else ``None``);
    ``meta`` holds task-specific extras (e.g. ``meta["A"]`` for ``linear``).
    """

    name: str
    X: torch.Tensor
    Y: torch.Tensor
    X_test: torch.Tensor
    Y_test: torch.Tensor
    bn_rank: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for a, b, split in ((self.X, self.Y, "train"), (self.X_test, self.Y_test, "test")):
            _check_xy(a, b, split)
        if self.X.shape[1] != self.X_test.shape[1] or self.Y.shape[1] != self.Y_test.shape[1]:
            raise DataError(
                f"train and test widths differ: X {tuple(self.X.shape)} vs X_test "
                f"{tuple(self.X_test.shape)}, Y {tuple(self.Y.shape)} vs Y_test "
                f"{tuple(self.Y_test.shape)}"
            )

    @property
    def d_in(self) -> int:
        return self.X.shape[1]

    @property
    def d_out(self) -> int:
        return self.Y.shape[1]

    @property
    def n_train(self) -> int:
        return self.X.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> Task:
        """A copy with the four arrays on ``device`` in ``dtype`` (``meta`` is shared)."""
        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype)

        return Task(self.name, mv(self.X), mv(self.Y), mv(self.X_test), mv(self.Y_test),
                    self.bn_rank, self.meta)

    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of the four arrays: identifies the data of a run."""
        h = hashlib.sha256()
        for t in (self.X, self.Y, self.X_test, self.Y_test):
            h.update(np.ascontiguousarray(t.detach().cpu().double().numpy()).tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def from_arrays(cls, X: Any, Y: Any, X_test: Any = None, Y_test: Any = None, *,
                    name: str = "arrays", bn_rank: int | None = None,
                    test_fraction: float = 0.2, seed: int = 0,
                    meta: dict[str, Any] | None = None) -> Task:
        """Build a task from array-likes ``X [N, d_in]``, ``Y [N, d_out]`` (1-d ``Y`` becomes
        a column). Without test arrays, a seeded ``test_fraction`` of rows is held out. Data is
        used as given (no rescaling)."""
        X, Y = _as_2d(X, "X"), _as_2d(Y, "Y")
        _check_xy(X, Y, "given")
        if (X_test is None) != (Y_test is None):
            raise DataError("give both X_test and Y_test, or neither")
        if X_test is None:
            if not 0.0 < test_fraction < 1.0:
                raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
            n_test = max(1, int(round(test_fraction * X.shape[0])))
            if X.shape[0] - n_test < 1:
                raise DataError(f"{X.shape[0]} rows are too few to hold out a test split")
            perm = torch.randperm(X.shape[0], generator=_gen(seed))
            te, tr = perm[:n_test], perm[n_test:]
            X, Y, X_test, Y_test = X[tr], Y[tr], X[te], Y[te]
        else:
            X_test, Y_test = _as_2d(X_test, "X_test"), _as_2d(Y_test, "Y_test")
        return cls(name, X, Y, X_test, Y_test, bn_rank, dict(meta or {}))


def _as_2d(a: Any, what: str) -> torch.Tensor:
    arr = np.asarray(a.detach().cpu().numpy() if torch.is_tensor(a) else a)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} must hold real numbers, got dtype {arr.dtype} (complex, text "
                        "or objects are not data bnstruct can fit)")
    t = torch.as_tensor(arr, dtype=torch.float64)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise DataError(f"{what} must be 2-d [N, d], got shape {tuple(t.shape)}")
    return t


def _check_xy(X: torch.Tensor, Y: torch.Tensor, split: str) -> None:
    if X.ndim != 2 or Y.ndim != 2:
        raise DataError(f"{split} X and Y must be 2-d, got {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"{split} X has {X.shape[0]} rows but Y has {Y.shape[0]}: they must match")
    if X.shape[0] == 0:
        raise DataError(f"{split} split is empty")
    for t, nm in ((X, "X"), (Y, "Y")):
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).any(1).sum())
            raise DataError(f"{split} {nm} has NaN or inf in {bad} rows: clean the data first")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _shallow(g: torch.Generator, d_in: int, hidden: int, d_out: int
             ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random shallow ReLU network ``x -> W2 relu(W1 x + b1)`` (He-scaled)."""
    W1 = _randn(g, hidden, d_in) * math.sqrt(2.0 / d_in)
    b1 = _randn(g, hidden) * 0.5
    W2 = _randn(g, d_out, hidden) * math.sqrt(1.0 / hidden)
    return lambda z: torch.relu(z @ W1.T + b1) @ W2.T


def _normalize(tr: torch.Tensor, te: torch.Tensor, *, center: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Center with the train mean (optional), scale globally so mean ||row||^2 = 1 on train."""
    if center:
        mu = tr.mean(0)
        tr, te = tr - mu, te - mu
    s = 1.0 / math.sqrt(tr.pow(2).sum(1).mean().item())
    return tr * s, te * s


def _check_sizes(**kw: int) -> None:
    for k, v in kw.items():
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{k} must be a positive integer, got {v!r}")


def composite(n_train: int = 256, n_test: int = 256, *, k: int = 2, d_latent: int = 8,
              d_in: int = 20, d_out: int = 20, hidden: int = 64, seed: int = 0) -> Task:
    r"""The first experiment of 2305.19008: :math:`z \sim N(0, I_{d_{latent}})`,
    :math:`x = g(z) \in \mathbb R^{d_{in}}`, :math:`y = h(z_1, \dots, z_k) \in \mathbb R^{d_{out}}`
    with random shallow ReLU nets ``g``, ``h`` of width ``hidden``. ``bn_rank = k``: ``y``
    factors through ``k`` latent coordinates (``g`` is injective for ``d_in > d_latent``
    almost surely). ``meta["Z"]``, ``meta["Z_test"]``: the latents; ``meta["g"]``,
    ``meta["h"]``: the raw maps (before the global centering and scaling)."""
    _check_sizes(n_train=n_train, n_test=n_test, k=k, d_latent=d_latent, d_in=d_in, d_out=d_out,
                 hidden=hidden)
    if k > d_latent:
        raise ConfigError(f"k={k} must be <= d_latent={d_latent}")
    g = _gen(seed)
    enc, dec = _shallow(g, d_latent, hidden, d_in), _shallow(g, k, hidden, d_out)
    Z = _randn(g, n_train + n_test, d_latent)
    X, Y = enc(Z), dec(Z[:, :k])
    X, Xt = _normalize(X[:n_train], X[n_train:])
    Y, Yt = _normalize(Y[:n_train], Y[n_train:])
    return Task("composite", X, Y, Xt, Yt, k, {"Z": Z[:n_train], "Z_test": Z[n_train:],
                                               "g": enc, "h": dec})


def teacher(n_train: int = 500, n_test: int = 500, *, k: int = 4, d_in: int = 50,
            d_out: int = 50, hidden: int = 100, seed: int = 0) -> Task:
    r"""Random deep ReLU teacher with a width-``k`` bottleneck (2209.15055, Figure 1):
    :math:`x \sim N(0, I_{d_{in}}/d_{in})`, :math:`y = h(g(x))` with shallow ReLU nets
    :math:`g: \mathbb R^{d_{in}} \to \mathbb R^k`, :math:`h: \mathbb R^k \to \mathbb R^{d_{out}}`.
    ``bn_rank = k``."""
    _check_sizes(n_train=n_train, n_test=n_test, k=k, d_in=d_in, d_out=d_out, hidden=hidden)
    g = _gen(seed)
    enc, dec = _shallow(g, d_in, hidden, k), _shallow(g, k, hidden, d_out)
    X = _randn(g, n_train + n_test, d_in)
    Y = dec(enc(X))
    Y, Yt = _normalize(Y[:n_train], Y[n_train:])
    X = X / math.sqrt(d_in)  # E||x||^2 = 1, still an isotropic Gaussian
    return Task("teacher", X[:n_train], Y, X[n_train:], Yt, k, {})


def symmetry(n_train: int = 256, n_test: int = 256, *, d_out: int = 20, hidden: int = 64,
             seed: int = 0) -> Task:
    r""":math:`x \sim N(0, I_3/3)`, :math:`y = h(\sqrt{x_1^2 + x_2^2}, x_3)` with a random shallow
    ReLU net ``h``: invariant under rotations about the third axis, ``bn_rank = 2``.
    ``meta["invariants"]`` / ``meta["invariants_test"]``: ``[N, 2]`` arrays ``(r, x_3)``."""
    _check_sizes(n_train=n_train, n_test=n_test, d_out=d_out, hidden=hidden)
    g = _gen(seed)
    dec = _shallow(g, 2, hidden, d_out)
    X = _randn(g, n_train + n_test, 3) / math.sqrt(3.0)  # E||x||^2 = 1, isotropic
    inv = torch.stack([X[:, :2].norm(dim=1), X[:, 2]], 1)
    Yall = dec(inv * math.sqrt(3.0))
    Y, Yt = _normalize(Yall[:n_train], Yall[n_train:])
    return Task("symmetry", X[:n_train], Y, X[n_train:], Yt, 2,
                {"invariants": inv[:n_train], "invariants_test": inv[n_train:], "axis": 2})


def linear(n_train: int = 256, n_test: int = 256, *, k: int = 3, d_in: int = 20,
           d_out: int = 20, singular_values: tuple[float, ...] | None = None,
           seed: int = 0) -> Task:
    r""":math:`y = A x`, :math:`x \sim N(0, I)`, ``A = U diag(s) V^T`` of rank ``k`` with Haar
    random ``U, V``. Default ``s``: geometric from 2 to 0.5. ``meta["A"]``: ``[d_out, d_in]``.
    No rescaling is applied (the cost of ``A`` is what the theory predicts)."""
    _check_sizes(n_train=n_train, n_test=n_test, k=k, d_in=d_in, d_out=d_out)
    if k > min(d_in, d_out):
        raise ConfigError(f"k={k} must be <= min(d_in, d_out)={min(d_in, d_out)}")
    if singular_values is None:
        s = torch.logspace(math.log10(2.0), math.log10(0.5), k, dtype=torch.float64)
    else:
        s = torch.as_tensor(singular_values, dtype=torch.float64)
        if s.shape != (k,) or not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
            raise ConfigError(f"singular_values must be {k} positive finite numbers, got {s}")
    g = _gen(seed)
    U = torch.linalg.qr(_randn(g, d_out, k))[0]
    V = torch.linalg.qr(_randn(g, d_in, k))[0]
    A = U @ torch.diag(s) @ V.T
    X = _randn(g, n_train + n_test, d_in)
    Y = X @ A.T
    return Task("linear", X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], k,
                {"A": A, "singular_values": s})


def digits(n_train: int | None = None, n_test: int | None = None, *, test_fraction: float = 0.2,
           seed: int = 0) -> Task:
    """scikit-learn's bundled 8x8 digits (1797 images, no download): inputs standardized per
    pixel with train statistics (constant pixels stay 0), one-hot targets in ``R^10``.
    A seeded split holds out ``test_fraction``; ``n_train``/``n_test`` subsample it.
    ``bn_rank`` is unknown (``None``); ``meta["labels"]``, ``meta["labels_test"]``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = torch.as_tensor(data.data, dtype=torch.float64)
    labels = torch.as_tensor(data.target, dtype=torch.long)
    perm = torch.randperm(X.shape[0], generator=_gen(seed))
    n_te = int(round(test_fraction * X.shape[0]))
    te, tr = perm[:n_te], perm[n_te:]
    if n_train is not None:
        _check_sizes(n_train=n_train)
        tr = tr[:n_train]
    if n_test is not None:
        _check_sizes(n_test=n_test)
        te = te[:n_test]
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    Xs = (X - mu) / sd
    Y = torch.nn.functional.one_hot(labels, 10).to(torch.float64)
    return Task("digits", Xs[tr], Y[tr], Xs[te], Y[te], None,
                {"labels": labels[tr], "labels_test": labels[te]})


def from_npz(path: str | Path, *, seed: int = 0, test_fraction: float = 0.2) -> Task:
    """Load ``X``, ``Y`` (and optional ``X_test``, ``Y_test``) from an ``.npz`` file.

    Loaded with ``allow_pickle=False``: object arrays are refused."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise DataError(f"{p}: cannot read arrays without pickle ({e})") from None
    except Exception as e:  # zipfile/format errors
        raise DataError(f"{p} is not a readable .npz file ({type(e).__name__}: {e})") from None
    missing = [k for k in ("X", "Y") if k not in arrays]
    if missing:
        raise DataError(f"{p} lacks array(s) {missing}; it has {sorted(arrays)}")
    for k, a in arrays.items():
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{p}: array {k} has non-numeric dtype {a.dtype}")
    return Task.from_arrays(arrays["X"], arrays["Y"], arrays.get("X_test"), arrays.get("Y_test"),
                            name=p.stem, seed=seed, test_fraction=test_fraction)


TASKS: dict[str, Callable[..., Task]] = {
    "composite": composite,
    "teacher": teacher,
    "symmetry": symmetry,
    "linear": linear,
    "digits": digits,
}


@dataclass(frozen=True)
class TaskSpec:
    """What a run stores to rebuild its data: a builder name and its keyword arguments
    (``data`` is an ``.npz`` path for file tasks, ``content`` the file's
    :meth:`Task.fingerprint` when the run was configured: part of the run's identity, so a
    changed file is a new run, and checked whenever the file is read again)."""

    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    data: str | None = None
    content: str | None = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> TaskSpec:
        """The spec of an ``.npz`` file's task, with its content's fingerprint."""
        task = from_npz(path, **kwargs)
        return cls(Path(path).stem, tuple(sorted(kwargs.items())), str(path),
                   task.fingerprint())

    def build(self) -> Task:
        if self.data is not None:
            task = from_npz(self.data, **dict(self.kwargs))
            if self.content is not None and task.fingerprint() != self.content:
                raise DataError(f"data file {self.data} has changed since this run was "
                                f"configured (content {task.fingerprint()}, the run's "
                                f"{self.content}): configure a new run for the new data")
            return task
        return make_task(self.name, **dict(self.kwargs))

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "kwargs": dict(self.kwargs), "data": self.data}
        if self.content is not None:  # (built-in tasks keep their old identity)
            d["content"] = self.content
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ConfigError("a task needs a name (a string)")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.get("kwargs", {}).items()}
        return cls(d["name"], tuple(sorted(kw.items())), d.get("data"), d.get("content"))


def make_task(name: str, **kwargs: Any) -> Task:
    """Build a registered task by name (``composite``, ``teacher``, ``symmetry``, ``linear``,
    ``digits``) with builder keyword arguments, e.g. ``make_task("composite", k=3, seed=1)``."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    import inspect

    params = inspect.signature(TASKS[name]).parameters
    bad = [k for k in kwargs if k not in params]
    if bad:
        raise ConfigError(f"task {name!r} has no option(s) {bad}; it takes {list(params)}")
    try:
        return TASKS[name](**kwargs)
    except TypeError as e:
        raise ConfigError(f"task {name!r}: {e}") from None
