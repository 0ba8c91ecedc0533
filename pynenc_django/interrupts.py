"""Signal handlers wait until the main thread's write transaction has ended.

Python runs a signal handler in the main thread between two bytecodes, wherever that
thread is, so inside a write transaction too, its locks held. pynenc's runners do real
work in their handlers: ``PersistentProcessRunner`` terminates its workers and waits up
to 5 s for each to put its invocation back, and putting it back needs the very lock the
interrupted transaction holds (SQLite's only write lock; a row lock on the others). A
SIGTERM landing mid-transaction stalled every worker until it was killed, with its
invocation left RUNNING for recovery to find.

:func:`signals_deferred` holds SIGTERM, SIGINT and SIGHUP for the length of the block and
runs their handlers, in arrival order, once it has ended: at most one transaction late.
A Ctrl-C therefore never cuts one of our transactions in half either: it commits (or
rolls back on its own error), then ``KeyboardInterrupt`` is raised where the block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

DEFERRED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)

_depth = 0  # nesting of signals_deferred() in the main thread (only it runs handlers)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold the handlers of :data:`DEFERRED_SIGNALS` until the outermost block ends.

    Only the main thread is concerned: Python runs handlers nowhere else, so another
    thread's transaction is never interrupted by one. Signals left to the operating
    system (``SIG_DFL`` for SIGTERM, ``SIG_IGN``) are not touched.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth:  # nested: the outermost block delivers
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return

    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    held: dict[int, Callable[[int, FrameType | None], Any]] = {}
    for signum in DEFERRED_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            held[signum] = handler
            signal.signal(signum, hold)
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        for signum, handler in held.items():
            if signal.getsignal(signum) is hold:  # unless the block installed its own
                signal.signal(signum, handler)
        for signum in pending:
            held[signum](signum, None)  # may raise (KeyboardInterrupt), as it would now
