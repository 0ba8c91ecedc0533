"""Transient errors: lock timeouts, deadlocks, serialization failures and dropped
connections are retried with jittered exponential backoff by :func:`retry_transient`,
and only when no outer transaction would be left half-done. A missing table becomes
:class:`~pynenc_django.exceptions.NotMigratedError`; anything else propagates.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from pynenc_django.db.connections import (
    close_when_thread_ends,
    fork_guard,
    get_connection,
    in_event_loop,
    sync_bridge,
)
from pynenc_django.db.schema import is_missing_schema, not_migrated
from pynenc_django.interrupts import signals_deferred

logger = logging.getLogger("pynenc_django")


# Substrings / codes that identify errors worth retrying, per vendor.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_PG_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock n/a
_MYSQL_TRANSIENT_CODES = {1205, 1213}  # lock wait timeout, deadlock
_MYSQL_CONNECTION_LOST = {2006, 2013}  # server has gone away, lost connection
_CONNECTION_LOST_TEXT = (
    "server closed the connection",
    "connection already closed",
    "the connection is closed",
    "connection is lost",
    "terminating connection",
    "consuming input failed",
    "server has gone away",
    "lost connection",
)


def is_transient(exc: BaseException) -> bool:
    """True for lock, deadlock and serialization errors that succeed when retried."""
    from django.db import OperationalError

    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None) or getattr(
        getattr(cause, "diag", None), "sqlstate", None
    )
    if sqlstate in _PG_TRANSIENT_SQLSTATES:
        return True
    args = getattr(cause, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT_CODES:
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _SQLITE_TRANSIENT)


def is_database_error(exc: BaseException) -> bool:
    """Any error of the database or its driver (``InterfaceError``, ``OperationalError``,
    ``IntegrityError``, ...: Django wraps them all in ``django.db.Error``)."""
    from django.db import Error

    return isinstance(exc, Error)


def is_connection_lost(exc: BaseException) -> bool:
    """True when the database connection itself went away (server restart, idle kill)."""
    from django.db import InterfaceError, OperationalError

    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    cause = exc.__cause__ or exc
    args = getattr(cause, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_CONNECTION_LOST:
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _CONNECTION_LOST_TEXT)


def _backoff(attempt: int) -> float:
    return min(1.0, 0.01 * (2**attempt)) * (0.5 + random.random())


def retry_transient[**P, R](method: Callable[P, R]) -> Callable[P, R]:
    """Retry a backend method on transient database errors.

    The method's first argument must be a backend exposing ``db_alias`` and
    ``transient_retries``. Retrying is only safe when this call owns the whole
    transaction, so inside a caller's ``atomic()`` block errors propagate unchanged.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if in_event_loop():
            # pynenc calls its backends synchronously from async tasks; Django forbids
            # ORM use on an event-loop thread, so run the call on a worker thread.
            return sync_bridge().submit(wrapper, *args, **kwargs).result()
        backend: Any = args[0]
        connection = get_connection(backend.db_alias)
        close_when_thread_ends(backend.db_alias, connection)
        with fork_guard:
            return _call_with_retries(method, connection, backend, args, kwargs)

    return wrapper


def _call_with_retries[R](
    method: Callable[..., R], connection: Any, backend: Any, args: Any, kwargs: Any
) -> R:
    try:
        return _attempts(method, connection, backend, args, kwargs)
    except Exception as exc:
        # A missing table is no outage: say which alias lacks ``migrate``, not the raw
        # "no such table" / "relation ... does not exist" of each database.
        if is_missing_schema(exc):
            raise not_migrated(backend.db_alias, exc) from exc
        raise


def _attempts[R](
    method: Callable[..., R], connection: Any, backend: Any, args: Any, kwargs: Any
) -> R:
    if connection.in_atomic_block:
        with signals_deferred():
            return method(*args, **kwargs)
    retries = backend.transient_retries
    attempt = 0
    while True:
        try:
            # No signal handler runs in the middle of a statement (pynenc_django.interrupts);
            # each attempt, so that the backoff's sleeps below do not hold them.
            with signals_deferred():
                return method(*args, **kwargs)
        except Exception as exc:
            lost = is_connection_lost(exc)
            if lost:
                # The statement's outcome is unknown (it may have committed): let the
                # runner's workers know, even when the retry below succeeds.
                from pynenc_django.ops.recovery import note_connection_lost

                note_connection_lost()
            if attempt >= retries or not (lost or is_transient(exc)):
                raise
            attempt += 1
            if lost:
                # Drop the dead connection; Django reconnects on next use.
                connection.close_if_unusable_or_obsolete()
                if connection.connection is not None and not connection.is_usable():
                    connection.close()
            delay = _backoff(attempt)
            logger.warning(
                "pynenc_django: %s on %s (attempt %d/%d), retrying in %.0f ms: %s",
                "connection lost" if lost else "transient database error",
                method.__qualname__,
                attempt,
                retries,
                delay * 1000,
                exc,
            )
            time.sleep(delay)
