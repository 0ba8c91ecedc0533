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
    due_signal,
    file_watch,
    listen_connection,
    notify_channel,
    signal_path,
    signals_are_complete,
    work_signal,
)

if TYPE_CHECKING:
    from threading import Event as ThreadEvent

#: The ``NOTIFY`` payload prefix of a delayed message (:mod:`pynenc_django.broker.delayed`).
DUE_PAYLOAD = "due:"

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

    def wait(self, limit: float | None = None) -> None:
        """Block until there may be new work, the stop event is set, or a timeout (at
        most ``limit`` seconds: the earliest delayed message's due time)."""

    def pass_on(self) -> None:
        """The last claim may have left work in the queue: let another idle worker look
        (where announcements are dispatched, :mod:`.dispatch`; elsewhere each idle worker
        heard them itself)."""

    def take_due_news(self) -> tuple[float | None, bool]:
        """What the waits since the last call heard of delayed messages: the earliest due
        time announced (epoch seconds), and whether one was announced without its time
        (then the earliest must be looked up)."""

    @property
    def notified(self) -> bool:
        """Whether every enqueue since :meth:`start` wakes :meth:`wait` (else it polls)."""

    @property
    def wakes(self) -> bool:
        """Whether some enqueues (every one, if :attr:`notified`) end :meth:`wait` early."""

    #: The last :meth:`wait` ended because an enqueue was announced, not on a timeout
    #: (False again from :meth:`found_work`).
    woken: bool
    #: The last :meth:`wait` ended only because a delayed message was announced: there is
    #: no new work to claim, only (maybe) an earlier due time to wait for.
    due_only: bool

    def close(self) -> None: ...


class BackoffWaiter:
    """Doubling sleeps between ``min_wait`` and ``max_wait``; no database traffic at all."""

    def __init__(self, stop_event: StopEvent | ThreadEvent, min_wait: float, max_wait: float):
        self.stop_event = stop_event
        self.min_wait = max(0.001, min(min_wait, max_wait))
        self.max_wait = max_wait
        self._next = self.min_wait
        self.woken = False
        self.due_only = False

    def start(self) -> None:
        pass

    def found_work(self) -> None:
        self._next = self.min_wait
        self.woken = False

    def wait(
        self, limit: float | None = None, hinted_within: Callable[[float], bool] | None = None
    ) -> None:
        """The next sleep of the schedule, at most ``limit``; ``hinted_within(seconds)``
        may end it early."""
        timeout = self._next if limit is None else max(0.0, min(self._next, limit))
        self._next = min(self.max_wait, self._next * 2)
        if hinted_within is None:
            self.stop_event.wait(timeout)
            self.woken = False
        else:
            self.woken = announced_within(hinted_within, timeout, self.stop_event)

    notified = False
    wakes = False

    def pass_on(self) -> None:
        pass

    def take_due_news(self) -> tuple[float | None, bool]:
        return None, False

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
        self.due_only = False
        self._due_hint: float | None = None
        self._due_unknown = False

    def take_due_news(self) -> tuple[float | None, bool]:
        news = self._due_hint, self._due_unknown
        self._due_hint, self._due_unknown = None, False
        return news

    def _heard_due(self, due: float | None) -> None:
        if due is None:
            self._due_unknown = True
        elif self._due_hint is None or due < self._due_hint:
            self._due_hint = due

    def found_work(self) -> None:
        self._fallback.found_work()
        self.woken = False

    def pass_on(self) -> None:
        pass

    @property
    def notified(self) -> bool:
        """Whether every announcement reaches this waiter (each subclass says when)."""
        raise NotImplementedError

    @property
    def wakes(self) -> bool:
        return self.notified

    def _wait_announced(self, announced: Callable[[float], bool], limit: float | None) -> None:
        """Until something is announced, the stop event is set, or ``notified_max_wait``
        (at most ``limit``) has passed."""
        seconds = self.max_wait if limit is None else max(0.0, min(self.max_wait, limit))
        self.woken = announced_within(announced, seconds, self.stop_event)
        self.due_only = False


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
        self._heard_work = False  # the last wait heard a notification announcing work

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

    def wait(self, limit: float | None = None) -> None:
        import psycopg

        self.woken = False
        if self._conn is None:
            if not self._connect():
                self._fallback.wait(limit)
                return
            self._heard_due(None)  # delayed messages sent meanwhile: look them up
            return  # (re)subscribed: anything sent while we were down needs a poll
        try:
            self._heard_work = False
            self._wait_announced(self._notified_within, limit)
            if self.woken and not self._heard_work:
                self.woken, self.due_only = False, True
        except psycopg.Error as exc:
            logger.warning("pynenc_django: lost the LISTEN connection (%s); reconnecting", exc)
            self.close()

    def _notified_within(self, seconds: float) -> bool:
        heard = work = False
        for notify in self._conn.notifies(timeout=seconds, stop_after=1):
            work |= self._note(notify.payload)
            heard = True
        if heard:
            for notify in self._conn.notifies(timeout=0):
                work |= self._note(notify.payload)  # coalesce a burst into one poll
        self._heard_work = work
        return heard

    def _note(self, payload: str) -> bool:
        """Whether a notification announces work; a delayed message's carries its due
        time instead (:mod:`pynenc_django.broker.delayed`)."""
        if not payload.startswith(DUE_PAYLOAD):
            return True
        try:
            self._heard_due(float(payload[len(DUE_PAYLOAD) :]))
        except ValueError:
            self._heard_due(None)
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
        due_path: str | None = None,
    ) -> None:
        super().__init__(stop_event, min_wait, max_wait, notified_max_wait)
        self.path = path
        self.due_path = due_path
        self.complete = complete
        self._watch: FileWatch | None = None

    def start(self) -> None:
        self._watch = file_watch(self.path, *([self.due_path] if self.due_path else []))

    @property
    def notified(self) -> bool:
        return self._watch is not None and self.complete

    @property
    def wakes(self) -> bool:
        return self._watch is not None

    def wait(self, limit: float | None = None) -> None:
        if self._watch is None:
            self._fallback.wait(limit)
            self.woken = False
            return
        if self.complete:
            self._wait_announced(self._watch.wait, limit)
        else:
            self._fallback.wait(limit, self._watch.wait)
            self.woken = self._fallback.woken
        self.due_only = False
        if self.due_path is not None and self.due_path in self._watch.touched:
            self._heard_due(None)  # a file carries no time: the worker looks it up
            if self._watch.touched == {self.due_path}:
                self.woken, self.due_only = False, True
        self._watch.touched.clear()

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
            path,
            stop_event,
            min_wait,
            max_wait,
            notified_max_wait,
            signals_are_complete(alias),
            signal_path(alias, due_signal(app_id)),
        )
    return BackoffWaiter(stop_event, min_wait, max_wait)
