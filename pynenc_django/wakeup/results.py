"""How a client waits for results: :class:`ResultWaiter`, one per alias and settings."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from pynenc_django.db import get_connection
from pynenc_django.utils import BoundedCache
from pynenc_django.vendors import vendor_of
from pynenc_django.wakeup.signals import (
    FINAL_CHANNEL,
    FINAL_SIGNAL,
    FileWatch,
    FinalAnnouncement,
    file_watch,
    listen_connection,
    parse_final,
    signal_path,
    signals_are_complete,
)

logger = logging.getLogger("pynenc_django")


class ResultWaiter:
    """How a client (``invocation.result`` outside any runner) waits between status looks.

    pynenc sleeps ``invocation_wait_results_sleep_time_sec`` (0.1 s) between looks, which
    is most of a short task's round trip. Here a wait returns as soon as the database
    announces that one of the awaited invocations is final (PostgreSQL: one ``LISTEN``
    connection per process, used by one waiting thread at a time; announcements for
    other invocations are remembered for their own waits), or else after a doubling
    sleep from 2 ms up to ``max_wait``: a short task is seen within milliseconds, a long
    one costs no more looks than pynenc's own loop. A group's wait (many ids, each look
    a query over all of them) gathers completions for ``GROUP_WAIT`` first.

    The ``LISTEN`` connection is closed once no wait has used it for ``idle_close``
    seconds (a thread of its own looks): PostgreSQL keeps every notification of the
    cluster until each listener has read it, so a subscription nobody reads (a web
    process that waited once) would fill the server's queue, and a full queue fails
    every ``NOTIFY``: every submit. The next wait subscribes again.

    Announcements also carry small results. The waiter keeps them for what a wait awaits
    and for what this process submitted while subscribed (:meth:`expect`), up to
    ``KEPT_RESULT_CHARS``; a status look between waits reads what has arrived since
    (:meth:`drain`). A client that submits many and then reads each ``.result`` in turn
    finds them there instead of querying each.
    """

    MIN_WAIT = 0.002
    GROUP_WAIT = 0.02
    REMEMBERED = 50_000
    #: ``django_result_listen_idle_sec``'s default.
    IDLE_CLOSE = 30.0
    #: Characters of serialized results kept from announcements until read (each under
    #: NOTIFY's 8,000 bytes); the oldest go first, and their readers query them.
    KEPT_RESULT_CHARS = 16 * 2**20

    def __init__(
        self, alias: str, max_wait: float, listen: bool, idle_close: float = IDLE_CLOSE
    ) -> None:
        self.alias = alias
        self.max_wait = max(self.GROUP_WAIT, max_wait)
        self.idle_close = idle_close
        #: When a wait last used the connection (monotonic), and the thread closing it
        #: after ``idle_close`` (running while there is a connection to close).
        self._used = time.monotonic()
        self._closer: threading.Thread | None = None
        self.listen = listen and vendor_of(get_connection(alias)).notifies
        # SQLite and MariaDB/MySQL: the final statuses' signal file instead (see
        # FileWatch); on MariaDB/MySQL a hint (this host's only) within the backoff.
        self._signal = signal_path(alias, FINAL_SIGNAL) if listen else None
        self._signals_complete = signals_are_complete(alias)
        self._watch: FileWatch | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        #: The next backoff of each wait, by its awaited ids: a wait goes on doubling
        #: whichever thread makes its next call (``async_result`` waits in a pool's).
        self._backoff: BoundedCache[frozenset[str], float] = BoundedCache(self.REMEMBERED)
        #: Final statuses announced since :attr:`epoch`, with what they told
        #: (:class:`FinalAnnouncement`; ``True``: the bare id of an earlier trigger).
        #: Results are not kept there but in :attr:`_results`, for some ids only.
        self._announced: BoundedCache[str, FinalAnnouncement | bool] = BoundedCache(self.REMEMBERED)
        #: Ids whose announced result is kept (:meth:`expect`), and the results kept.
        self._expected: BoundedCache[str, bool] = BoundedCache(self.REMEMBERED)
        self._results = KeptResults(self.KEPT_RESULT_CHARS)
        self._kept_lock = threading.Lock()
        #: Bumped at every (re)subscription: announcements are complete from then on.
        self.epoch = 0

    @property
    def listening(self) -> bool:
        """Subscribed now: every final status from :attr:`epoch` on will be announced."""
        return self._conn is not None

    def announced(self, invocation_id: str) -> bool:
        return bool(self._announced.get(invocation_id))

    def announcement(self, invocation_id: str) -> FinalAnnouncement | None:
        """What the announcement of ``invocation_id``'s final status told, if it told more
        than the id (see :func:`~pynenc_django.wakeup.signals.parse_final`). Its result, if
        kept, is handed out once (the caller keeps it), so that results are held briefly."""
        heard = self._announced.get(invocation_id)
        if not isinstance(heard, FinalAnnouncement):
            return None
        with self._kept_lock:
            result = self._results.take(invocation_id)
        return heard if result is None else replace(heard, result=result)

    def expect(self, invocation_ids: Iterable[str]) -> None:
        """Keep the announced results of these (just submitted by this process) for a
        later status look, if subscribed now: an earlier final status cannot be."""
        if self._conn is None:
            return
        with self._kept_lock:
            for invocation_id in invocation_ids:
                self._expected.put(invocation_id, True)

    def drain(self) -> bool:
        """Take in the announcements that arrived since the last wait, without waiting
        (a status look between waits), unless another thread is waiting on the connection.
        Whether any arrived."""
        import psycopg

        if self._conn is None or not self._lock.acquire(blocking=False):
            return False
        heard = False
        try:
            # The connection runs nothing after its LISTEN: what arrived is on the socket.
            while self._conn is not None and _readable_now(self._conn.fileno()):
                batch = [self._hear(n.payload, frozenset()) for n in self._conn.notifies(timeout=0)]
                if not batch:
                    break
                heard = True
        except psycopg.Error as exc:
            logger.warning("pynenc_django: lost the result LISTEN connection (%s)", exc)
            self.close()
        finally:
            self._used = time.monotonic()
            self._lock.release()
        return heard

    def _hear(self, payload: str, awaited: frozenset[str]) -> str:
        """Remember one announcement (the caller holds :attr:`_lock`); its invocation id.

        Every final status of the database is announced here: results are kept only for
        the awaited invocations and the expected ones (the others' readers query them)."""
        invocation_id, heard = parse_final(payload)
        if heard is not None:
            with self._kept_lock:
                expected = self._expected.pop(invocation_id)
                if heard.result is not None and (expected or invocation_id in awaited):
                    self._results.put(invocation_id, heard.result)
            if heard.result is not None:
                heard = replace(heard, result=None)
        self._announced.put(invocation_id, heard or True)
        return invocation_id

    def wait(self, invocation_ids: list[str]) -> None:
        _last_waited.waiter = self
        self._used = time.monotonic()
        shortest = self.MIN_WAIT if len(invocation_ids) == 1 else self.GROUP_WAIT
        awaited = frozenset(invocation_ids)
        # A new wait, or progress on a group's (fewer ids), starts again from the shortest.
        timeout = self._backoff.get(awaited) or shortest
        self._backoff.put(awaited, min(self.max_wait, timeout * 2))
        if any(self._announced.get(i) for i in invocation_ids):
            return
        if (self.listen or self._signal is not None) and self._lock.acquire(blocking=False):
            try:
                if self.listen and self._wait_notified(awaited, shortest):
                    return
                if self._signal is not None and self._wait_signalled(len(awaited) > 1, timeout):
                    return
            finally:
                self._lock.release()
        time.sleep(timeout)

    def _wait_signalled(self, group: bool, timeout: float) -> bool:
        """Wait for any final status to be signalled (then, for a group, ``GROUP_WAIT``
        longer for more): up to ``max_wait`` where signals are complete (SQLite), else
        (MariaDB/MySQL) up to the backoff's ``timeout``. True when the caller should look
        now; False where the file cannot be watched (the caller sleeps instead)."""
        if self._watch is None:
            self._watch = file_watch(self._signal)
            if self._watch is None:
                self._signal = None  # cannot watch here: back off from now on
                return False
            return True  # watching from now: a final status may have been signalled before
        if self._watch.wait(self.max_wait if self._signals_complete else timeout) and group:
            time.sleep(self.GROUP_WAIT)
        return True

    def _wait_notified(self, awaited: frozenset[str], gather: float) -> bool:
        """Wait up to ``max_wait`` for an announcement naming one of ``awaited``, then
        ``gather`` longer for more (a group's).

        True when the caller should look at the statuses now: announced, timed out, or
        just subscribed (a final status may have been announced before). False when the
        connection failed; the caller sleeps instead.
        """
        import psycopg

        try:
            if self._conn is None:
                self._conn = listen_connection(self.alias, FINAL_CHANNEL)
                self.epoch += 1
                if self._closer is None or not self._closer.is_alive():  # (or forked)
                    self._closer = threading.Thread(
                        target=self._close_when_idle, name="pynenc-django-listen-idle", daemon=True
                    )
                    self._closer.start()
                return True
            deadline = time.monotonic() + self.max_wait
            found = False
            while (remaining := deadline - time.monotonic()) > 0:
                for notify in self._conn.notifies(timeout=remaining, stop_after=1):
                    invocation_id = self._hear(notify.payload, awaited)
                    if invocation_id in awaited and not found:
                        found = True
                        deadline = time.monotonic() + (gather if len(awaited) > 1 else 0)
            return True
        except psycopg.Error as exc:
            logger.warning("pynenc_django: lost the result LISTEN connection (%s)", exc)
            self.close()
            return False
        finally:
            self._used = time.monotonic()

    def _close_when_idle(self) -> None:
        """The closer thread: the ``LISTEN`` connection closed once no wait has used it for
        ``idle_close``; ends with it. Starting it and ending it both happen under the
        waiter's lock, so a new connection never goes without a closer."""
        while True:
            time.sleep(max(0.01, self._used + self.idle_close - time.monotonic()))
            with self._lock:
                if self._conn is None:
                    self._closer = None
                    return
                if time.monotonic() - self._used >= self.idle_close:
                    self._unsubscribe()
                    self._closer = None
                    return

    def _unsubscribe(self) -> None:
        """Close the connection; the results kept from it go too (only a subscribed
        waiter's announcements are consulted)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        with self._kept_lock:
            self._results = KeptResults(self._results.budget)
            self._expected.clear()

    def close(self) -> None:
        self._unsubscribe()
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _forked(self) -> None:
        """In a forked child: start unsubscribed. The parent's connection is dropped, never
        used or closed here (two processes reading one socket split its messages between
        them, and closing it would end the parent's session); so is its file watch, whose
        events the two would share. Locks a parent thread held at the fork are new."""
        self._conn = None
        self._closer = None
        self._lock = threading.Lock()
        self._kept_lock = threading.Lock()
        if self._watch is not None:
            self._watch.close()  # this process's copy of the descriptor only
            self._watch = None


class KeptResults:
    """Serialized results by invocation id, at most ``budget`` characters in all: the
    oldest are dropped first. Not thread-safe (:class:`ResultWaiter` locks around it)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._data: OrderedDict[str, str] = OrderedDict()

    def put(self, key: str, value: str) -> None:
        self.take(key)
        self._data[key] = value
        self.size += len(value)
        while self.size > self.budget:
            self.size -= len(self._data.popitem(last=False)[1])

    def take(self, key: str) -> str | None:
        value = self._data.pop(key, None)
        if value is not None:
            self.size -= len(value)
        return value

    def __len__(self) -> int:
        return len(self._data)


def _readable_now(fd: int) -> bool:
    """Whether ``fd`` has data now (``poll``: any descriptor number, unlike ``select``)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


_result_waiters: dict[tuple[str, float, bool, float], ResultWaiter] = {}
_result_waiters_lock = threading.Lock()


def result_waiter(
    alias: str, max_wait: float, listen: bool, idle_close: float = ResultWaiter.IDLE_CLOSE
) -> ResultWaiter:
    """The process's :class:`ResultWaiter` for ``alias`` and these settings (apps with other
    settings in the same process get their own), so ``filter_final`` can find it."""
    key = (alias, max_wait, listen, idle_close)
    with _result_waiters_lock:
        if key not in _result_waiters:
            _result_waiters[key] = ResultWaiter(alias, max_wait, listen, idle_close)
        return _result_waiters[key]


def current_result_waiter(alias: str) -> ResultWaiter | None:
    """The waiter this thread last waited on, if it is ``alias``'s and subscribed.

    Only that one's announcements are read by the loop asking (``filter_final`` between
    its waits); another configuration's waiter may be subscribed too with nobody reading
    it, and trusting its announcements would hide final statuses until the next full look.
    """
    waiter: ResultWaiter | None = getattr(_last_waited, "waiter", None)
    if waiter is not None and waiter.alias == alias and waiter.listening:
        return waiter
    return None


_last_waited = threading.local()


def _after_fork_in_child() -> None:
    global _result_waiters_lock
    _result_waiters_lock = threading.Lock()
    for waiter in _result_waiters.values():
        waiter._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def close_result_waiters() -> None:
    """Close and forget every result waiter of this process (their ``LISTEN`` connection
    and signal file name the server they were made for): after the database moved."""
    with _result_waiters_lock:
        for waiter in _result_waiters.values():
            waiter.close()
        _result_waiters.clear()
