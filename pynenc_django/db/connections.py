"""Connections across threads, forks and event loops.

Django gives each thread its own connection and knows nothing of ``fork``: pynenc's
runners start threads (closed here when they end) and fork processes (which must neither
fork mid-query or mid-log-line nor reuse the parent's sockets); its async tasks call backends from an
event loop, where Django forbids the ORM (:func:`in_event_loop`, the sync bridge).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper


logger = logging.getLogger("pynenc_django")


class DjangoNotConfiguredError(RuntimeError):
    """Raised when a pynenc Django backend is used in a process without Django settings."""


def ensure_django() -> None:
    """Make sure Django's app registry is ready, setting it up on first use.

    Runner processes started with ``spawn`` begin with a bare interpreter; they inherit
    ``DJANGO_SETTINGS_MODULE`` from their parent, so calling ``django.setup()`` here is
    enough to make them use the same database.
    """
    from django.apps import apps

    if apps.ready:
        return
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise DjangoNotConfiguredError(
            "pynenc's Django backends need Django settings, but this process has none. "
            "Set DJANGO_SETTINGS_MODULE (as manage.py does) or call settings.configure() "
            "before building the pynenc app, and add 'pynenc_django' to INSTALLED_APPS."
        )
    if apps.loading:
        raise DjangoNotConfiguredError(
            "A pynenc Django backend was used while Django was still loading its apps "
            "(for example from a models.py or AppConfig.__init__). Use pynenc from "
            "AppConfig.ready() or later."
        )
    import django

    django.setup()


def get_connection(alias: str) -> BaseDatabaseWrapper:
    from django.db import connections

    return connections[alias]


def in_event_loop() -> bool:
    """Whether this thread runs an event loop (the caller is a coroutine, or under one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@functools.cache
def sync_bridge() -> ThreadPoolExecutor:
    """Where backend calls made from an event loop run: Django forbids the ORM there."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="pynenc-django-sync")


class _ForkGuard:
    """Keeps ``fork()`` from happening while another thread is inside a database call.

    pynenc's ProcessRunner and MultiThreadRunner fork from a runner thread while other
    threads keep querying. A child forked while another thread held a database library's
    global mutex (SQLite's VFS lock, taken on every transaction) inherits it locked and
    hangs on its first connection. Backend calls share this guard; a fork waits until
    no *other* thread is inside one, and the child starts with a fresh guard.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False
        self._local = threading.local()

    def __enter__(self) -> None:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._forking:
                    self._cond.wait()
                self._active += 1
        self._local.depth = depth + 1

    def __exit__(self, *exc: object) -> None:
        self._local.depth -= 1
        if self._local.depth == 0:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def before_fork(self) -> None:
        mine = 1 if getattr(self._local, "depth", 0) else 0
        self._cond.acquire()
        self._forking = True
        # Bounded: a thread stuck in a query must not freeze the runner forever.
        if not self._cond.wait_for(lambda: self._active <= mine, timeout=5.0):
            logger.warning(
                "pynenc_django: forking while %d other thread(s) are still inside a "
                "database call after 5 s; the child may hang on its first connection",
                self._active - mine,
            )

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        depth = getattr(self._local, "depth", 0)
        self._reset()  # other threads do not exist in the child
        self._active = 1 if depth else 0
        self._local.depth = depth


fork_guard = _ForkGuard()


class _ThreadConnectionCloser:
    """Closes a thread's connection when the thread's locals are destroyed.

    pynenc starts threads of its own (one per invocation in ThreadRunner, pools in its
    tests) that never pass through Django's request cycle, so nothing else would close
    their connections and a busy runner would exhaust the server's connection slots.
    """

    def __init__(self, wrapper: BaseDatabaseWrapper) -> None:
        self.wrapper = wrapper

    def __del__(self) -> None:
        raw = self.wrapper.connection
        self.wrapper.connection = None
        if raw is not None:
            with contextlib.suppress(Exception):  # best effort at thread exit
                raw.close()


_thread_closers = threading.local()


def close_when_thread_ends(alias: str, connection: BaseDatabaseWrapper) -> None:
    if threading.current_thread() is threading.main_thread():
        return
    closers: dict[str, _ThreadConnectionCloser] | None = getattr(_thread_closers, "by_alias", None)
    if closers is None:
        closers = _thread_closers.by_alias = {}
    if alias not in closers:
        closers[alias] = _ThreadConnectionCloser(connection)


def _drop_inherited_connections() -> None:
    """After ``fork``, abandon the parent's database connections in the child.

    Closing them would send a protocol-level goodbye over the parent's socket and break
    the parent's session (PostgreSQL, MariaDB). We keep a reference so they are never
    garbage-collected (no ``__del__`` close either) and let Django open fresh ones.
    """
    if "django.db" not in sys.modules:
        return
    from django.conf import settings

    if not settings.configured:
        return
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _inherited_connections.append(conn.connection)
            conn.connection = None
        conn.in_atomic_block = False
        conn.savepoint_ids = []
        conn.needs_rollback = False
        conn.closed_in_transaction = False
        conn.run_on_commit = []


_inherited_connections: list[Any] = []


class _LoggingForkGuard:
    """Holds every logging handler's lock across ``fork()``.

    Python re-creates the handlers' locks in the child, but not the lock inside the
    stream a handler writes to: a child forked while another thread was in the middle of
    writing a log record to a file inherits that stream's lock held, and hangs on its
    first log line, maybe inside a transaction whose database locks then stall the
    parent too (pynenc's ProcessRunner, a worker logging its RUNNING status). Holding
    the handlers' locks means no thread is inside a handler when the process forks.
    """

    def __init__(self) -> None:
        self._held: list[logging.Handler] = []

    def before_fork(self) -> None:
        self._held = []
        refs = list(getattr(logging, "_handlerList", ()))
        for ref in refs:
            handler = ref()
            lock = getattr(handler, "lock", None)
            # Bounded: a handler stuck on a dead stream must not freeze the forking thread.
            if handler is not None and lock is not None and lock.acquire(timeout=5.0):
                self._held.append(handler)

    def after_fork_in_parent(self) -> None:
        held, self._held = self._held, []
        for handler in reversed(held):
            handler.lock.release()  # type: ignore[union-attr]

    def after_fork_in_child(self) -> None:
        self._held = []  # logging has already given the child's handlers new locks


logging_fork_guard = _LoggingForkGuard()


def _before_fork() -> None:
    # Database calls drain first: one of them may log on its way out.
    fork_guard.before_fork()
    logging_fork_guard.before_fork()


def _after_fork_in_parent() -> None:
    logging_fork_guard.after_fork_in_parent()
    fork_guard.after_fork_in_parent()


def _after_fork_in_child() -> None:
    logging_fork_guard.after_fork_in_child()
    fork_guard.after_fork_in_child()
    sync_bridge.cache_clear()  # the parent's pool threads do not exist in the child
    _drop_inherited_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
