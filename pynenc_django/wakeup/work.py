"""How an idle worker waits for new work: :func:`make_waiter` picks the database's way."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pynenc_django.db import get_connection
from pynenc_django.vendors import vendor_of
from pynenc_django.wakeup.signals import (
    FileWatch,
    file_watch,
    listen_connection,
    notify_channel,
    signal_path,
    signals_are_complete,
    work_signal,
)

if TYPE_CHECKING:
    from threading import Event as ThreadEvent

logger = logging.getLogger("pynenc_django")


class StopEvent(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


#: How often a blocked wait looks at the stop event (no database traffic).
STOP_CHECK_SEC = 0.25


def announced_within(
    announced: Callable[[float], bool], seconds: float, stop_event: StopEvent | ThreadEvent
) -> bool:
    """Whether ``announced(step)`` reports an announcement within ``seconds``, asked in
    steps of :data:`STOP_CHECK_SEC` so that the stop event ends the wait too."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0 and not stop_event.is_set():
        if announced(min(STOP_CHECK_SEC, remaining)):
            return True
    return False


class Waiter(Protocol):
    def start(self) -> None:
        """Prepare to be woken (subscribe) *before* the first poll, so nothing is missed."""

    def found_work(self) -> None:
        """The last poll found something: the next wait starts short again."""

    def wait(self) -> None:
        """Block until there may be new work, the stop event is set, or a timeout."""

    @property
    def notified(self) -> bool:
        """Whether every enqueue since :meth:`start` wakes :meth:`wait` (else it polls)."""

    @property
    def wakes(self) -> bool:
        """Whether some enqueues (every one, if :attr:`notified`) end :meth:`wait` early."""

    #: The last :meth:`wait` ended because an enqueue was announced, not on a timeout
    #: (False again from :meth:`found_work`).
    woken: bool

    def close(self) -> None: ...


class BackoffWaiter:
    """Doubling sleeps between ``min_wait`` and ``max_wait``; no database traffic at all."""

    def __init__(self, stop_event: StopEvent | ThreadEvent, min_wait: float, max_wait: float):
        self.stop_event = stop_event
        self.min_wait = max(0.001, min(min_wait, max_wait))
        self.max_wait = max_wait
        self._next = self.min_wait
        self.woken = False

    def start(self) -> None:
        pass

    def found_work(self) -> None:
        self._next = self.min_wait
        self.woken = False

    def wait(self, hinted_within: Callable[[float], bool] | None = None) -> None:
        """The next sleep of the schedule; ``hinted_within(seconds)`` may end it early."""
        timeout = self._next
        self._next = min(self.max_wait, self._next * 2)
        if hinted_within is None:
            self.stop_event.wait(timeout)
            self.woken = False
        else:
            self.woken = announced_within(hinted_within, timeout, self.stop_event)

    notified = False
    wakes = False

    def close(self) -> None:
        pass


class _AnnouncedWaiter:
    """A waiter woken by announcements; it looks at the stop event every
    :data:`STOP_CHECK_SEC` and polls anyway after ``notified_max_wait``, and backs off like
    :class:`BackoffWaiter` while it cannot be woken."""

    def __init__(
        self, stop_event: StopEvent, min_wait: float, max_wait: float, notified_max_wait: float
    ) -> None:
        self.stop_event = stop_event
        self.max_wait = notified_max_wait
        self._fallback = BackoffWaiter(stop_event, min_wait, max_wait)
        self.woken = False

    def found_work(self) -> None:
        self._fallback.found_work()
        self.woken = False

    @property
    def notified(self) -> bool:
        """Whether every announcement reaches this waiter (each subclass says when)."""
        raise NotImplementedError

    @property
    def wakes(self) -> bool:
        return self.notified

    def _wait_announced(self, announced: Callable[[float], bool]) -> None:
        """Until something is announced, the stop event is set, or ``notified_max_wait``
        has passed."""
        self.woken = announced_within(announced, self.max_wait, self.stop_event)


class PostgresListener(_AnnouncedWaiter):
    """``LISTEN`` on a dedicated connection; falls back to backoff while it is down."""

    def __init__(
        self,
        alias: str,
        app_id: str,
        stop_event: StopEvent,
        min_wait: float,
        max_wait: float,
        notified_max_wait: float,
    ) -> None:
        super().__init__(stop_event, min_wait, max_wait, notified_max_wait)
        self.alias = alias
        self.channel = notify_channel(app_id)
        self._conn: Any = None

    def _connect(self) -> bool:
        import psycopg

        try:
            self._conn = listen_connection(self.alias, self.channel)
        except psycopg.Error as exc:
            logger.warning("pynenc_django: cannot LISTEN for new work (%s); polling", exc)
            return False
        return True

    def start(self) -> None:
        if self._conn is None:
            self._connect()

    @property
    def notified(self) -> bool:
        return self._conn is not None

    def wait(self) -> None:
        import psycopg

        self.woken = False
        if self._conn is None:
            if not self._connect():
                self._fallback.wait()
                return
            return  # (re)subscribed: anything sent while we were down needs a poll
        try:
            self._wait_announced(self._notified_within)
        except psycopg.Error as exc:
            logger.warning("pynenc_django: lost the LISTEN connection (%s); reconnecting", exc)
            self.close()

    def _notified_within(self, seconds: float) -> bool:
        if any(True for _ in self._conn.notifies(timeout=seconds, stop_after=1)):
            for _ in self._conn.notifies(timeout=0):
                pass  # coalesce a burst of enqueues into one poll
            return True
        return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class FileSignalWaiter(_AnnouncedWaiter):
    """Block on the app's work signal file (:class:`FileWatch`); backs off where it
    cannot be watched. ``complete`` (SQLite): every enqueue touches it, so it is waited
    on like ``LISTEN``; otherwise (MariaDB/MySQL: this host's enqueues only) it just
    ends the backoff's sleeps early."""

    def __init__(
        self,
        path: str,
        stop_event: StopEvent,
        min_wait: float,
        max_wait: float,
        notified_max_wait: float,
        complete: bool = True,
    ) -> None:
        super().__init__(stop_event, min_wait, max_wait, notified_max_wait)
        self.path = path
        self.complete = complete
        self._watch: FileWatch | None = None

    def start(self) -> None:
        self._watch = file_watch(self.path)

    @property
    def notified(self) -> bool:
        return self._watch is not None and self.complete

    @property
    def wakes(self) -> bool:
        return self._watch is not None

    def wait(self) -> None:
        if self._watch is None:
            self._fallback.wait()
            self.woken = False
        elif self.complete:
            self._wait_announced(self._watch.wait)
        else:
            self._fallback.wait(self._watch.wait)
            self.woken = self._fallback.woken

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None


def make_waiter(
    alias: str,
    app_id: str,
    stop_event: StopEvent,
    *,
    min_wait: float,
    max_wait: float,
    notified_max_wait: float,
    listen: bool,
) -> Waiter:
    """The best waiter this database supports."""
    if listen and vendor_of(get_connection(alias)).notifies:
        try:
            import psycopg

            if hasattr(psycopg.Connection, "notifies"):
                return PostgresListener(
                    alias, app_id, stop_event, min_wait, max_wait, notified_max_wait
                )
        except ImportError:
            logger.info("pynenc_django: psycopg 3 is not installed; idle workers back off")
    if listen and (path := signal_path(alias, work_signal(app_id))) is not None:
        return FileSignalWaiter(
            path, stop_event, min_wait, max_wait, notified_max_wait, signals_are_complete(alias)
        )
    return BackoffWaiter(stop_event, min_wait, max_wait)
