"""One idle worker woken per announcement of new work, not every idle worker of a runner.

Each idle worker used to listen for itself (its own ``LISTEN`` connection, or its own
watch of SQLite's signal file), so every enqueue woke all of a runner's idle workers and
all but one claimed in vain. With 2 workers and single submits, that was 0.3 ms of worker
CPU and an empty claim statement per task (``bench/``), and a ``LISTEN`` connection per
worker.

Here the runner parent listens once, in a thread (:class:`Announcer`), and lets one idle
worker go per announcement through a pipe it shares with its workers
(:class:`WakeShared`). A worker whose claim may have left more in the queue lets the next
idle worker go (:meth:`DispatchedWaiter.pass_on`), so a burst reaches as many workers as
it keeps busy, one claim each. News of a delayed message's due time reaches every worker
(each keeps its own due clock). Whatever goes wrong, nothing waits longer than before:

* while the parent's subscription is down, workers poll on the backoff schedule, as a
  worker without one did, and the first wait after it is back lets a worker poll (what
  was enqueued meanwhile was never announced);
* a worker still polls after ``django_notify_safety_poll_sec`` without a wake-up;
* a token let go while every worker is busy is taken by the first to be idle (one claim,
  maybe empty); at most one such token is pending for work, one per worker for news of a
  due time.

Only where announcements reach every process (PostgreSQL's ``NOTIFY``, SQLite's signal
file): on MariaDB/MySQL a host hears only its own enqueues, and each worker keeps its own
backoff, which those hints shorten (:class:`~pynenc_django.wakeup.work.FileSignalWaiter`).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import math
import os
import select
import termios
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pynenc_django.wakeup.work import (
    BackoffWaiter,
    FileSignalWaiter,
    PostgresListener,
    StopEvent,
    Waiter,
    announced_within,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnContext

logger = logging.getLogger("pynenc_django")


@dataclass(frozen=True)
class WakeShared:
    """What a runner shares with its workers (passed to each as it is spawned).

    Tokens are bytes in a pipe, read one at a time by whichever idle worker gets there
    first (non-blocking reads: a byte goes to exactly one). No named semaphore or lock: a
    runner killed with its workers leaves nothing behind in ``/dev/shm``, and no process
    can die holding anything another one waits for."""

    #: The pipe's ends (``multiprocessing`` connections, used as raw descriptors).
    reader: Connection
    writer: Connection
    #: Whether the parent is subscribed now, so that every enqueue is announced.
    complete: Any  # multiprocessing RawValue("b")
    #: The last due time announced (NaN: announced without its value), written before
    #: ``due_news`` counts it; a reader that sees the count move by more than one since
    #: its last look lets its due clock look them up instead.
    due_at: Any  # RawValue("d")
    due_news: Any  # RawValue("q")

    @classmethod
    def create(cls, context: SpawnContext) -> WakeShared:
        reader, writer = context.Pipe(duplex=False)
        os.set_blocking(reader.fileno(), False)
        return cls(
            reader,
            writer,
            context.RawValue("b", 0),
            context.RawValue("d", math.nan),
            context.RawValue("q", 0),
        )

    def pending(self) -> int:
        """Tokens let go and not taken yet."""
        count = array.array("i", [0])
        fcntl.ioctl(self.reader.fileno(), termios.FIONREAD, count, True)
        return count[0]

    def let_go(self, workers: int = 1) -> None:
        """Add tokens until ``workers`` are pending (never more: while every worker is
        busy, announcements must not pile up into claims in vain later)."""
        missing = workers - self.pending()
        if missing > 0:
            with contextlib.suppress(BlockingIOError):
                os.write(self.writer.fileno(), b"." * missing)

    def take(self, seconds: float) -> bool:
        """One token within ``seconds``, if any comes."""
        fd = self.reader.fileno()
        deadline = time.monotonic() + seconds
        while True:
            if _readable(fd, max(0.0, deadline - time.monotonic())):
                try:
                    if os.read(fd, 1):
                        return True
                except BlockingIOError:
                    pass  # another worker took it
            if time.monotonic() >= deadline:
                return False

    def announce_due(self, due_at: float | None) -> None:
        self.due_at.value = math.nan if due_at is None else due_at
        self.due_news.value += 1


_epolls: dict[int, Any] = {}


def _readable(fd: int, seconds: float) -> bool:
    """Whether ``fd`` has something to read within ``seconds``. Linux: an epoll of this
    process's own with ``EPOLLEXCLUSIVE``, so that a token wakes one waiting worker, not
    all of them (``select`` on a shared pipe would wake every one)."""
    if not hasattr(select, "EPOLLEXCLUSIVE"):
        return bool(select.select([fd], [], [], seconds)[0])
    poller = _epolls.get(fd)
    if poller is None:
        poller = _epolls[fd] = select.epoll()
        poller.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
    return bool(poller.poll(seconds))


def dispatchable(waiter: Waiter) -> bool:
    """Whether ``waiter`` (the runner's own) hears every enqueue, once subscribed."""
    return isinstance(waiter, PostgresListener) or (
        isinstance(waiter, FileSignalWaiter) and waiter.complete
    )


class Announcer:
    """The runner parent's one subscription, in a thread: a token per announcement."""

    def __init__(
        self, waiter: Waiter, stop: threading.Event, shared: WakeShared, workers: int
    ) -> None:
        """``waiter`` waits on ``stop`` (:meth:`stop` sets it)."""
        self.waiter = waiter
        self.shared = shared
        self.workers = workers
        self._stop = stop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribe now (before any worker's first claim), then listen in a thread."""
        self.waiter.start()
        self.shared.complete.value = self.waiter.notified
        self._thread = threading.Thread(
            target=self._listen, name="pynenc-work-announcer", daemon=True
        )
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                self.listen_once()
            except Exception as exc:  # never let the thread die: workers would back off
                logger.warning("pynenc_django: announcing work to the workers failed: %s", exc)
                self.shared.complete.value = False
                self._stop.wait(1.0)

    def listen_once(self) -> None:
        """One wait of the runner's waiter, and what it means for the workers."""
        was_complete = bool(self.shared.complete.value)
        self.waiter.wait(None)
        complete = self.waiter.notified
        self.shared.complete.value = complete
        due_at, due_unknown = self.waiter.take_due_news()
        if due_at is not None or due_unknown:
            self.shared.announce_due(None if due_unknown else due_at)
            self.shared.let_go(self.workers)  # every idle worker hears it (its due clock)
        if self.waiter.woken or (complete and not was_complete):
            # Work announced; or subscribed again: what came meanwhile needs a look.
            self.shared.let_go()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.shared.complete.value = False
        with contextlib.suppress(Exception):
            self.waiter.close()


class DispatchedWaiter:
    """A worker's wait for its runner's :class:`Announcer` (a
    :class:`~pynenc_django.wakeup.work.Waiter`)."""

    def __init__(
        self,
        shared: WakeShared,
        stop_event: StopEvent,
        min_wait: float,
        max_wait: float,
        notified_max_wait: float,
    ) -> None:
        self.shared = shared
        # Non-blocking reads, whatever the descriptor brought along: a worker that lost
        # the race for a token must not block in read() past the stop event.
        os.set_blocking(shared.reader.fileno(), False)
        self.stop_event = stop_event
        self.max_wait = notified_max_wait
        self._fallback = BackoffWaiter(stop_event, min_wait, max_wait)
        self.woken = False
        self.due_only = False  # a token never says why: a wake for a due time claims too
        self._news_seen = shared.due_news.value
        self._due_hint: float | None = None
        self._due_unknown = False

    def start(self) -> None:
        """Nothing: the runner subscribed before it spawned this worker."""

    def found_work(self) -> None:
        self._fallback.found_work()
        self.woken = False

    @property
    def notified(self) -> bool:
        return bool(self.shared.complete.value)

    @property
    def wakes(self) -> bool:
        return self.notified

    def wait(self, limit: float | None = None) -> None:
        self._hear_due_news()
        if self.notified:
            seconds = self.max_wait if limit is None else max(0.0, min(self.max_wait, limit))
            self.woken = announced_within(self._token, seconds, self.stop_event)
        else:
            self._fallback.wait(limit, self._token)  # a token still ends a sleep early
            self.woken = self._fallback.woken
        self._hear_due_news()

    def _token(self, seconds: float) -> bool:
        return self.shared.take(seconds)

    def pass_on(self) -> None:
        """This worker's claim may have left work queued: let another idle one look."""
        if self.notified:
            self.shared.let_go()

    def _hear_due_news(self) -> None:
        count = self.shared.due_news.value  # the count first: due_at is at least as new
        if count == self._news_seen:
            return
        due_at = self.shared.due_at.value
        missed = count - self._news_seen > 1  # several since the last look: look them up
        self._news_seen = count
        if missed or math.isnan(due_at):
            self._due_unknown = True
        elif self._due_hint is None or due_at < self._due_hint:
            self._due_hint = due_at

    def take_due_news(self) -> tuple[float | None, bool]:
        news = self._due_hint, self._due_unknown
        self._due_hint, self._due_unknown = None, False
        return news

    def close(self) -> None:
        pass
