"""How an idle worker waits for new work without polling the database in a loop.

pynenc's own persistent workers re-query the broker as fast as they can when it is empty
(about 1,200 statements per second each on SQLite). Ours wait instead:

* **PostgreSQL**: the broker sends ``NOTIFY`` on the app's channel in the transaction that
  enqueues, and each worker ``LISTEN``\\s on a dedicated autocommit connection. A worker
  wakes within milliseconds of a commit; otherwise it only polls every
  ``notified_max_wait`` seconds, a safety net for work enqueued with notifications off.
* **SQLite** (one host by nature): whoever commits an enqueue or a final status touches
  a signal file beside the database file (:func:`signal_after_commit`), and waiters block
  on it with Linux's inotify: woken within a millisecond, no statement and no CPU while
  idle, the same ``notified_max_wait`` safety poll. Elsewhere (no inotify, a database in
  memory) it falls back to the backoff below.
* **MariaDB/MySQL** (no notifications): exponential backoff from the runner's loop sleep
  up to ``max_wait``, reset whenever work is found; the same signal files (in a private
  directory, :func:`signal_dir`) end a sleep early when the enqueue or the final status
  came from a process of this user on this host. Processes on other hosts are never
  waited for longer than the backoff: a signal is a hint there, not a promise.
* PostgreSQL behind a transaction-mode pooler (``django_listen_notify = False``): the
  backoff alone.

Both wait on the runner's stop event, so a stop request interrupts an idle wait at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
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


def signal_path(alias: str, signal: str) -> str | None:
    """The file that ``signal`` touches: beside the database file on SQLite; on
    MariaDB/MySQL in this user's signal directory (:func:`signal_dir`), named after the
    server and database. ``None`` on PostgreSQL (it has ``NOTIFY``), for SQLite in memory
    (one process: nobody to signal), and where there is no safe directory."""
    connection = get_connection(alias)
    if connection.vendor == "mysql":
        directory = signal_dir()
        settings = connection.settings_dict
        where = f"{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
        return (
            None
            if directory is None
            else os.path.join(directory, f"{sha256_hex(where)[:16]}-{signal}")
        )
    if connection.vendor != "sqlite" or connection.is_in_memory_db():  # type: ignore[attr-defined]
        return None
    name = str(connection.settings_dict["NAME"])
    if name.startswith("file:"):
        name = name.removeprefix("file:").split("?", 1)[0]
    return f"{name}-pynenc-{signal}"


def signals_are_complete(alias: str) -> bool:
    """SQLite's signals reach every process using the database (one host by nature);
    MariaDB's only the processes on this host, so there they are hints that shorten a
    poll, never a reason to stop polling."""
    return get_connection(alias).vendor == "sqlite"


@functools.cache
def signal_dir() -> str | None:
    """``<tmp>/pynenc-django-<uid>``, private to this user (0700, ours, no symlink), where
    MariaDB/MySQL's signal files live; ``None`` if it cannot be made so."""
    import stat
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"pynenc-django-{os.getuid()}")
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        info = os.lstat(path)
    except OSError as exc:
        logger.info("pynenc_django: no signal directory %s (%s); polling only", path, exc)
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        logger.warning("pynenc_django: %s is not a private directory of ours; polling only", path)
        return None
    return path


def work_signal(app_id: str) -> str:
    """The signal of new queue messages for an app (cf. :func:`notify_channel`)."""
    return f"work-{sha256_hex(app_id)[:16]}"


#: The signal of final statuses, any app's (cf. :data:`FINAL_CHANNEL`).
FINAL_SIGNAL = "final"


def touch(path: str) -> None:
    """Signal ``path``'s waiters: a new modification time wakes their inotify watch."""
    try:
        os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            open(path, "a").close()  # noqa: SIM115 - create it; waiters watch it from now
    except OSError as exc:  # a signal only saves waiting: the safety poll still looks
        logger.debug("pynenc_django: cannot touch %s (%s)", path, exc)


def signal_after_commit(alias: str, path: str | None) -> None:
    """Touch ``path`` once the current transaction commits (at once outside one), so a
    woken waiter always finds what it was woken for."""
    if path is None:
        return
    from django.db import transaction

    transaction.on_commit(functools.partial(touch, path), using=alias)


# Linux inotify (<sys/inotify.h>): a file's content or attributes changed, or it went.
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_IGNORED = 0x400, 0x800, 0x8000
_IN_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_DELETE_SELF | _IN_MOVE_SELF
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1  # noqa: B018 - AttributeError where there is no inotify
    return libc


class FileWatch:
    """An inotify watch on one signal file (created if missing): :meth:`wait` returns
    True once it was touched since the last wait. Raises ``OSError`` (or
    ``AttributeError``) where inotify is unavailable; callers then poll instead."""

    def __init__(self, path: str) -> None:
        self.path = path
        libc = _libc()
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        try:
            self._watch()
        except OSError:
            os.close(self.fd)
            raise

    def _watch(self) -> None:
        if not os.path.exists(self.path):
            touch(self.path)
        if _libc().inotify_add_watch(self.fd, os.fsencode(self.path), _IN_MASK) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {self.path}")

    def wait(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        gone = False
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.fd, 4096):  # drain: a burst wakes once
                offset = 0
                while offset + _EVENT.size <= len(data):
                    _, mask, _, name_length = _EVENT.unpack_from(data, offset)
                    gone |= bool(mask & _IN_IGNORED)
                    offset += _EVENT.size + name_length
        if gone:  # the file was removed or replaced: watch the new one
            with contextlib.suppress(OSError):
                self._watch()
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def file_watch(path: str | None) -> FileWatch | None:
    """A :class:`FileWatch` on ``path``, or ``None`` (no path, or no inotify here)."""
    if path is None:
        return None
    try:
        return FileWatch(path)
    except (OSError, AttributeError) as exc:
        logger.info("pynenc_django: cannot watch %s (%s); polling instead", path, exc)
        return None


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
    if listen and get_connection(alias).vendor == "postgresql":
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
        # SQLite and MariaDB/MySQL: the final statuses' signal file instead (see
        # FileWatch); on MariaDB/MySQL a hint (this host's only) within the backoff.
        self._signal = signal_path(alias, FINAL_SIGNAL) if listen else None
        self._signals_complete = signals_are_complete(alias)
        self._watch: FileWatch | None = None
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
        if self._watch is not None:
            self._watch.close()
            self._watch = None


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
