"""Time limits (``time_limit``, ``soft_time_limit``; :class:`~pynenc_django.conf.ConfigTaskDjango`).

* **Hard** (``time_limit``): enforced by the runner, which alone can stop a worker stuck
  anywhere (in C code, in a ``time.sleep``, in a lock). A worker tells its runner what it
  runs under a hard limit and since when, on a pipe of its own (:class:`LimitReporter`:
  the stack of such invocations, sent when it changes); the runner reads the pipes every
  loop iteration (``runner_loop_sleep_time_sec``, :class:`WorkerReports`), and once an
  invocation is past its limit it kills the worker, records the invocation FAILED with
  ``TimeLimitExceededError`` and does not put it back (``DjangoPersistentProcessRunner``).
  The limit counts from the invocation's start on the worker, wall clock, waits
  included; one run nested inside another's wait has its own, and when it is the one
  killed, the invocation whose wait ran it is rerouted (it runs again), as after any
  worker death. Invocations without a hard limit cost nothing here: they are not sent.
* **Soft** (``soft_time_limit``): ``SoftTimeLimitExceeded`` raised inside the task by
  the worker itself (:class:`SoftLimit`: ``setitimer`` and ``SIGALRM``, in the worker's
  main thread), for its outermost invocation only. The signal handler raises only where
  the task's own code runs: while a nested run (inside the task's wait) is in progress,
  or while a backend call of ours holds a statement or a transaction
  (:func:`~pynenc_django.interrupts.deferring`), or outside the task's function (pynenc
  recording its status), it looks again 50 ms later; at a loop's backward jump, where
  CPython would raise it past the task's ``try`` (:func:`_at_backward_jump`), 5 ms later,
  up to 20 times (a loop that calls nothing has no other spot: it gets it there). An
  async task's event loop gets it wherever the loop is, so the task cannot catch it
  there: use ``asyncio.timeout``.

Clocks are ``time.monotonic()``, which is system-wide on Linux and macOS, so a worker's
start times mean the same to its runner.
"""

from __future__ import annotations

import dis
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pynenc.util.asyncio_helper import run_task_sync

from pynenc_django import interrupts
from pynenc_django.conf import task_settings
from pynenc_django.exceptions import SoftTimeLimitExceeded

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from types import FrameType

    from pynenc.app import Pynenc
    from pynenc.invocation.dist_invocation import DistributedInvocation

#: When the soft limit's signal arrives where it must not raise, it looks again this late.
SOFT_RETRY_SEC = 0.05
#: When it arrives at a loop's backward jump: this much later, at most this many times.
BACKWARD_JUMP_RETRY_SEC = 0.005
BACKWARD_JUMP_RETRIES = 20


@dataclass(frozen=True)
class TaskLimits:
    """A task's limits, in seconds; 0: none."""

    time_limit: float = 0.0
    soft_time_limit: float = 0.0


_limits: dict[tuple[str, str], TaskLimits] = {}


def task_limits(app: Pynenc, task_key: str) -> TaskLimits:
    """The limits of ``task_key`` (:func:`~pynenc_django.conf.task_settings`), read once
    per process and task."""
    key = (app.app_id, task_key)
    found = _limits.get(key)
    if found is None:
        conf = task_settings(app.config_values, task_key)
        found = _limits[key] = TaskLimits(float(conf.time_limit), float(conf.soft_time_limit))
    return found


@dataclass(frozen=True)
class Limited:
    """An invocation running under a hard limit, as its worker reported it."""

    invocation_id: str
    task_id_key: str
    started: float  # time.monotonic() on the worker
    time_limit: float

    def overdue(self, now: float) -> bool:
        return now - self.started >= self.time_limit


# ---------------------------------------------------------------------------- worker side


class LimitReporter:
    """The worker's end of its report pipe: the invocations it runs under a hard limit,
    outermost first, sent whole whenever they change (never for the others)."""

    def __init__(self, conn: Connection | None) -> None:
        self.conn = conn
        self.stack: list[Limited] = []
        self._lock = threading.Lock()  # a nested run beside an event loop has a thread

    def started(self, limited: Limited) -> None:
        with self._lock:
            self.stack.append(limited)
            self._send()

    def finished(self, limited: Limited) -> None:
        with self._lock:
            if limited in self.stack:
                self.stack.remove(limited)
            self._send()

    def _send(self) -> None:
        """Blocks only while the pipe is full (hundreds of reports the runner has not
        read; it reads every loop iteration): back-pressure, never a lost report."""
        if self.conn is None:
            return
        payload = [[e.invocation_id, e.task_id_key, e.started, e.time_limit] for e in self.stack]
        try:
            self.conn.send_bytes(json.dumps(payload).encode())
        except OSError:
            self.conn = None  # the runner is gone: nobody to enforce the limit


class SoftLimit:
    """The soft limit of a worker's outermost invocation (see the module docstring)."""

    def __init__(self, nested: Callable[[], bool]) -> None:
        #: Whether a run nested in a wait is in progress (then it must not raise).
        self.nested = nested
        self.armed: tuple[str, str, float] | None = None
        self._previous: Any = None
        self._jumps_passed = 0

    def arm(self, invocation_id: str, task_id_key: str, seconds: float) -> None:
        self.armed = (invocation_id, task_id_key, seconds)
        self._jumps_passed = 0
        previous = signal.signal(signal.SIGALRM, self._on_alarm)
        self._previous = None if previous == self._on_alarm else previous
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def disarm(self) -> None:
        """Stop the timer. A handler of the task's own is put back; otherwise ours stays,
        inert: a SIGALRM already on its way would kill the worker under the default."""
        self.armed = None  # first: a handler running now must not arm the timer again
        signal.setitimer(signal.ITIMER_REAL, 0)
        if callable(self._previous):
            signal.signal(signal.SIGALRM, self._previous)
        self._previous = None

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.armed is None:
            return
        if self.nested() or interrupts.deferring() or not _in_task_function(frame):
            signal.setitimer(signal.ITIMER_REAL, SOFT_RETRY_SEC)
            return
        if _at_backward_jump(frame) and self._jumps_passed < BACKWARD_JUMP_RETRIES:
            self._jumps_passed += 1
            signal.setitimer(signal.ITIMER_REAL, BACKWARD_JUMP_RETRY_SEC)
            return
        invocation_id, task_id_key, seconds = self.armed
        self.armed = None  # once
        raise SoftTimeLimitExceeded(invocation_id, task_id_key, seconds)


_BACKWARD_JUMPS = frozenset(
    dis.opmap[name] for name in ("JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT") if name in dis.opmap
)


def _at_backward_jump(frame: FrameType | None) -> bool:
    """Whether ``frame`` stopped at a loop's backward jump, where CPython 3.11 to 3.13 can
    raise a signal handler's exception past the ``try`` around the loop (python/cpython
    #108214, #130279: the jump is outside the ``try``'s range in the exception table), so
    ``except SoftTimeLimitExceeded`` around a ``while`` loop would not see it."""
    return frame is not None and frame.f_code.co_code[frame.f_lasti] in _BACKWARD_JUMPS


def _in_task_function(frame: FrameType | None) -> bool:
    """Whether ``frame`` is inside the task's function, as pynenc calls it."""
    while frame is not None:
        if frame.f_code is run_task_sync.__code__:
            return True
        frame = frame.f_back
    return False


class WorkerLimits:
    """A worker's side of the time limits: what it reports, and its soft timer."""

    def __init__(self, app: Pynenc, reports: Connection | None, nested: Callable[[], bool]) -> None:
        self.app = app
        self.reporter = LimitReporter(reports)
        self.soft = SoftLimit(nested)

    @contextmanager
    def running(self, invocation: DistributedInvocation, outermost: bool) -> Iterator[None]:
        """Around one run: reported while it has a hard limit, its soft limit armed while
        it is the outermost one (and in the main thread, where signals arrive)."""
        task_key = invocation.task.task_id.key
        limits = task_limits(self.app, task_key)
        limited = None
        if limits.time_limit > 0:
            limited = Limited(
                invocation.invocation_id, task_key, time.monotonic(), limits.time_limit
            )
            self.reporter.started(limited)
        soft = (
            outermost
            and limits.soft_time_limit > 0
            and threading.current_thread() is threading.main_thread()
        )
        if soft:
            self.soft.arm(invocation.invocation_id, task_key, limits.soft_time_limit)
        try:
            yield
        finally:
            if soft:
                self.soft.disarm()
            if limited is not None:
                self.reporter.finished(limited)


# ---------------------------------------------------------------------------- runner side


class WorkerReports:
    """The runner's ends of its workers' report pipes, and what each said last."""

    def __init__(self) -> None:
        self._pipes: dict[str, Connection] = {}
        self.limited: dict[str, list[Limited]] = {}

    def add(self, runner_id: str, pipe: Connection) -> None:
        self._pipes[runner_id] = pipe

    def drop(self, runner_id: str) -> None:
        """Forget a worker (dead, or killed): close its pipe."""
        self.limited.pop(runner_id, None)
        pipe = self._pipes.pop(runner_id, None)
        if pipe is not None:
            pipe.close()

    def read(self) -> None:
        """Everything the workers sent since the last read (one ``poll`` each when they
        sent nothing); only each worker's last report counts."""
        for runner_id, pipe in list(self._pipes.items()):
            last = None
            try:
                while pipe.poll():
                    last = pipe.recv_bytes()
            except (EOFError, OSError):
                self._pipes.pop(runner_id, None)  # gone; reaped by the loop
                pipe.close()
            if last is not None:
                self.limited[runner_id] = [
                    Limited(str(iid), str(task), float(started), float(limit))
                    for iid, task, started, limit in json.loads(last)
                ]

    def overdue(self, now: float) -> list[tuple[str, Limited]]:
        """``(worker, invocation)`` past its hard limit, outermost first per worker."""
        return [
            (runner_id, limited)
            for runner_id, stack in self.limited.items()
            for limited in stack
            if limited.overdue(now)
        ]

    def close(self) -> None:
        for runner_id in list(self._pipes):
            self.drop(runner_id)
