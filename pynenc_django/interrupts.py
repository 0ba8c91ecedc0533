"""Signal handlers wait until the main thread's statement or write transaction has ended.

Python runs a signal handler in the main thread between two bytecodes, wherever that
thread is, so inside a write transaction too, its locks held, or between a statement and
the reading of its result. pynenc's runners do real work in their handlers:
``PersistentProcessRunner`` terminates its workers and waits up to 5 s for each to put
its invocation back, which needs the very lock the interrupted transaction holds
(SQLite's only write lock; a row lock on the others); ``ThreadRunner`` puts its
invocations back itself, on the connection whose statement it interrupted (MariaDB:
"Commands out of sync", and the invocation stays RUNNING).

:func:`signals_deferred` holds SIGTERM, SIGINT and SIGHUP for the length of the block and
runs their handlers, in arrival order, once it has ended: at most one statement or
transaction late. Every backend call (:func:`~pynenc_django.db.retry_transient`, each
attempt) and every write transaction is such a block. A Ctrl-C therefore never cuts one
of ours in half either: it commits (or rolls back on its own error), then
``KeyboardInterrupt`` is raised where the block ends.

A block costs no system call: the first one after a Python handler is installed puts a
stand-in (:class:`_StandIn`) in its place, which calls it at once outside blocks.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

DEFERRED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)

_MAIN_THREAD = threading.main_thread()
_depth = 0  # nesting of signals_deferred() in the main thread (only it runs handlers)
_pending: list[int] = []  # signals held by the current outermost block, in arrival order


class _StandIn:
    """In place of a Python handler of a deferred signal: runs it at once outside a
    :func:`signals_deferred` block, holds the signal inside one."""

    __slots__ = ("handler",)

    def __init__(self, handler: Callable[[int, FrameType | None], Any]) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        if _depth:
            _pending.append(signum)
            return None
        return self.handler(signum, frame)


def _stand_in_for_handlers() -> None:
    for signum in DEFERRED_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler) and not isinstance(handler, _StandIn):
            signal.signal(signum, _StandIn(handler))


class _Deferral:
    """The block of :func:`signals_deferred` (a class, not a generator: it wraps every
    backend call, so it must cost next to nothing)."""

    __slots__ = ("active",)

    def __enter__(self) -> None:
        global _depth
        self.active = threading.current_thread() is _MAIN_THREAD
        if not self.active:
            return
        if not _depth:
            _stand_in_for_handlers()  # a handler installed since the last block
        _depth += 1

    def __exit__(self, *exc_info: object) -> None:
        global _depth
        if not self.active:
            return
        _depth -= 1
        if not _depth and _pending:
            held = _pending[:]
            _pending.clear()
            for signum in held:
                handler = signal.getsignal(signum)  # the block may have installed its own
                if isinstance(handler, _StandIn):
                    handler = handler.handler
                if callable(handler):
                    handler(signum, None)  # may raise (KeyboardInterrupt), as it would now


def signals_deferred() -> _Deferral:
    """Hold the handlers of :data:`DEFERRED_SIGNALS` until the outermost block ends.

    Only the main thread is concerned: Python runs handlers nowhere else, so another
    thread's statement is never interrupted by one. Signals left to the operating
    system (``SIG_DFL`` for SIGTERM, ``SIG_IGN``) are not touched.
    """
    return _Deferral()


def deferring() -> bool:
    """Whether the main thread is inside a :func:`signals_deferred` block (a backend call
    or a write transaction of ours): a handler of another signal that raises must wait
    (the soft time limit's does, :mod:`pynenc_django.runner.limits`)."""
    return _depth > 0
