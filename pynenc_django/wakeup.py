"""How an idle worker waits for new work without polling the database in a loop.

pynenc's own persistent workers re-query the broker as fast as they can when it is empty
(about 1,200 statements per second each on SQLite). Ours wait instead:

* **PostgreSQL**: the broker sends ``NOTIFY`` on the app's channel in the transaction that
  enqueues, and each worker ``LISTEN``\\s on a dedicated autocommit connection. A worker
  wakes within milliseconds of a commit; otherwise it only polls every
  ``notified_max_wait`` seconds, a safety net for work enqueued with notifications off.
* **SQLite, MariaDB/MySQL** (no notifications) and PostgreSQL behind a transaction-mode
  pooler (set ``django_listen_notify = False``): exponential backoff from the runner's
  loop sleep up to ``max_wait``, reset whenever work is found.

Both wait on the runner's stop event, so a stop request interrupts an idle wait at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from pynenc_django.db import get_connection
from pynenc_django.utils import BoundedCache, sha256_hex

if TYPE_CHECKING:
    from threading import Event as ThreadEvent

logger = logging.getLogger("pynenc_django")


def notify_channel(app_id: str) -> str:
    """The PostgreSQL channel for an app: a fixed-length, always-valid identifier."""
    return f"pynenc_{sha256_hex(app_id)[:24]}"


#: Channel on which PostgreSQL announces every invocation that reached a final status
#: (payload: its id), from the status trigger of migration 0003: no extra statement.
FINAL_CHANNEL = "pynenc_final"


def listen_connection(alias: str, channel: str) -> Any:
    """A dedicated autocommit psycopg connection listening on ``channel``."""
    import psycopg

    params = dict(get_connection(alias).get_connection_params())
    for django_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    conn = psycopg.connect(**params, autocommit=True)
    conn.execute(f'LISTEN "{channel}"')
    return conn


class StopEvent(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Waiter(Protocol):
    def start(self) -> None:
        """Prepare to be woken (subscribe) *before* the first poll, so nothing is missed."""

    def found_work(self) -> None:
        """The last poll found something: the next wait starts short again."""

    def wait(self) -> None:
        """Block until there may be new work, the stop event is set, or a timeout."""

    def close(self) -> None: ...


class BackoffWaiter:
    """Doubling sleeps between ``min_wait`` and ``max_wait``; no database traffic at all."""

    def __init__(self, stop_event: StopEvent | ThreadEvent, min_wait: float, max_wait: float):
        self.stop_event = stop_event
        self.min_wait = max(0.001, min(min_wait, max_wait))
        self.max_wait = max_wait
        self._next = self.min_wait

    def start(self) -> None:
        pass

    def found_work(self) -> None:
        self._next = self.min_wait

    def wait(self) -> None:
        self.stop_event.wait(self._next)
        self._next = min(self.max_wait, self._next * 2)

    def close(self) -> None:
        pass


class PostgresListener:
    """``LISTEN`` on a dedicated connection; falls back to backoff while it is down."""

    # How often a blocked wait looks at the stop event (no database traffic).
    STOP_CHECK_SEC = 0.25

    def __init__(
        self,
        alias: str,
        app_id: str,
        stop_event: StopEvent,
        min_wait: float,
        max_wait: float,
        notified_max_wait: float,
    ) -> None:
        self.alias = alias
        self.channel = notify_channel(app_id)
        self.stop_event = stop_event
        self.max_wait = notified_max_wait
        self._fallback = BackoffWaiter(stop_event, min_wait, max_wait)
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

    def found_work(self) -> None:
        self._fallback.found_work()

    def wait(self) -> None:
        import psycopg

        if self._conn is None:
            if not self._connect():
                self._fallback.wait()
                return
            return  # (re)subscribed: anything sent while we were down needs a poll
        remaining = self.max_wait
        try:
            while remaining > 0 and not self.stop_event.is_set():
                step = min(self.STOP_CHECK_SEC, remaining)
                if any(True for _ in self._conn.notifies(timeout=step, stop_after=1)):
                    # Coalesce a burst of enqueues into one poll.
                    for _ in self._conn.notifies(timeout=0):
                        pass
                    return
                remaining -= step
        except psycopg.Error as exc:
            logger.warning("pynenc_django: lost the LISTEN connection (%s); reconnecting", exc)
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


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
    if listen and get_connection(alias).vendor == "postgresql":
        try:
            import psycopg

            if hasattr(psycopg.Connection, "notifies"):
                return PostgresListener(
                    alias, app_id, stop_event, min_wait, max_wait, notified_max_wait
                )
        except ImportError:
            logger.info("pynenc_django: psycopg 3 is not installed; idle workers back off")
    return BackoffWaiter(stop_event, min_wait, max_wait)


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
    """

    MIN_WAIT = 0.002
    GROUP_WAIT = 0.02
    REMEMBERED = 50_000

    def __init__(self, alias: str, max_wait: float, listen: bool) -> None:
        self.alias = alias
        self.max_wait = max(self.GROUP_WAIT, max_wait)
        self.listen = listen and get_connection(alias).vendor == "postgresql"
        self._conn: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._announced: BoundedCache[str, bool] = BoundedCache(self.REMEMBERED)
        #: Bumped at every (re)subscription: announcements are complete from then on.
        self.epoch = 0

    @property
    def listening(self) -> bool:
        """Subscribed now: every final status from :attr:`epoch` on will be announced."""
        return self._conn is not None

    def announced(self, invocation_id: str) -> bool:
        return bool(self._announced.get(invocation_id))

    def wait(self, invocation_ids: list[str]) -> None:
        shortest = self.MIN_WAIT if len(invocation_ids) == 1 else self.GROUP_WAIT
        awaited = set(invocation_ids)
        if awaited != getattr(self._local, "awaited", None):
            self._local.next = shortest  # a new wait, or progress on a group's
        self._local.awaited = awaited
        timeout = self._local.next
        self._local.next = min(self.max_wait, timeout * 2)
        if any(self._announced.get(i) for i in invocation_ids):
            return
        if self.listen and self._lock.acquire(blocking=False):
            try:
                if self._wait_notified(awaited, shortest):
                    return
            finally:
                self._lock.release()
        time.sleep(timeout)

    def _wait_notified(self, awaited: set[str], gather: float) -> bool:
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
                return True
            deadline = time.monotonic() + self.max_wait
            found = False
            while (remaining := deadline - time.monotonic()) > 0:
                for notify in self._conn.notifies(timeout=remaining, stop_after=1):
                    self._announced.put(notify.payload, True)
                    if notify.payload in awaited and not found:
                        found = True
                        deadline = time.monotonic() + (gather if len(awaited) > 1 else 0)
            return True
        except psycopg.Error as exc:
            logger.warning("pynenc_django: lost the result LISTEN connection (%s)", exc)
            self.close()
            return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


_result_waiters: dict[tuple[str, float, bool], ResultWaiter] = {}
_result_waiters_lock = threading.Lock()


def result_waiter(alias: str, max_wait: float, listen: bool) -> ResultWaiter:
    """The process's :class:`ResultWaiter` for ``alias`` and these settings (apps with other
    settings in the same process get their own), so ``filter_final`` can find it."""
    key = (alias, max_wait, listen)
    with _result_waiters_lock:
        if key not in _result_waiters:
            _result_waiters[key] = ResultWaiter(alias, max_wait, listen)
        return _result_waiters[key]


def existing_result_waiter(alias: str) -> ResultWaiter | None:
    """A waiter of this process subscribed to ``alias``'s announcements, if any."""
    for (waiter_alias, _, _), waiter in list(_result_waiters.items()):
        if waiter_alias == alias and waiter.listening:
            return waiter
    return None
