"""The one stop signal of training: a :class:`StopToken`, set by the driver's Ctrl-C handler
(or by code), read by every runner at its step boundaries.

- A runner in this process (the main thread or a training thread) reads the token after each
  step and stops at that step boundary with checkpoints.
- A worker process gets the token's event (a ``multiprocessing`` Event made by its pool's
  context, :meth:`StopToken.for_processes`) when it starts, and reads it the same way; worker
  processes ignore SIGINT, so a terminal's Ctrl-C reaches them only through the driver.
- Within :func:`deferred_sigint` (main thread, Python's default SIGINT handler) a first Ctrl-C
  sets the token; a second raises ``KeyboardInterrupt`` at once, except inside
  :func:`hold_sigint` (a run directory being written), where it is raised when the block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["StopToken", "deferred_sigint", "hold_sigint", "active_token"]


class StopToken:
    """A flag that asks runners to stop at their next step boundary.

    ``event``: a ``threading.Event`` (default) or a ``multiprocessing`` Event shared with
    worker processes. :attr:`presses` counts the Ctrl-Cs the driver's handler saw (a
    runner saves no new checkpoint after a second one: the optimizer may be half-way
    through a step)."""

    def __init__(self, event: Any | None = None) -> None:
        self.event = event if event is not None else threading.Event()
        self.presses = 0

    @classmethod
    def for_processes(cls, ctx: Any) -> StopToken:
        """A token whose event worker processes of ``ctx`` (a multiprocessing context) can
        share: pass :attr:`event` to them when they start."""
        return cls(ctx.Event())

    def set(self) -> None:
        """Ask every runner that reads this token to stop (idempotent)."""
        self.event.set()

    def is_set(self) -> bool:
        return bool(self.event.is_set())

    __bool__ = is_set


_ACTIVE = threading.local()  # .token: this thread's innermost deferred_sigint token
_HELD = threading.local()  # .depth, .pending: hold_sigint state of the main thread


def active_token() -> StopToken | None:
    """The token of this thread's active :func:`deferred_sigint` block, if any."""
    return getattr(_ACTIVE, "token", None)


def _catches() -> bool:
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)


@contextmanager
def deferred_sigint(token: StopToken | None = None) -> Iterator[StopToken]:
    """Within the block a first Ctrl-C sets the token (runners stop at a step boundary with
    checkpoints) and a second raises ``KeyboardInterrupt`` (held inside
    :func:`hold_sigint`). Yields the token: ``token`` if given (a helper thread that trains
    for the main thread's block passes the main thread's), else the enclosing block's, else
    a new one. Signals are caught only in the main thread under Python's default SIGINT
    handler; elsewhere only :meth:`StopToken.set` stops the runners."""
    outer = active_token()
    tok = token if token is not None else (outer if outer is not None else StopToken())
    _ACTIVE.token = tok
    try:
        if not _catches():
            yield tok
            return

        def handler(signum: int, frame: Any) -> None:
            tok.presses += 1
            tok.set()
            if tok.presses > 1:
                if getattr(_HELD, "depth", 0):
                    _HELD.pending = True
                else:
                    raise KeyboardInterrupt

        old = signal.signal(signal.SIGINT, handler)
        try:
            yield tok
        finally:
            signal.signal(signal.SIGINT, old)
    finally:
        _ACTIVE.token = outer


@contextmanager
def hold_sigint() -> Iterator[None]:
    """A block that a Ctrl-C does not cut: inside :func:`deferred_sigint` a second press is
    raised when the block ends; outside one, any press is (both in the main thread only;
    elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outside = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if outside:
        old = signal.signal(signal.SIGINT, lambda s, f: setattr(_HELD, "pending", True))
    _HELD.depth = getattr(_HELD, "depth", 0) + 1
    try:
        yield
    finally:
        _HELD.depth -= 1
        if outside:
            signal.signal(signal.SIGINT, old)
        if _HELD.depth == 0 and getattr(_HELD, "pending", False):
            _HELD.pending = False
            raise KeyboardInterrupt
