"""The worker's two connections: its own, persistent, and the task code's, with Django's
per-request hygiene.

A worker's own statements (claim, status changes, result, heartbeat, wake-up) must not
depend on the project's ``CONN_MAX_AGE``: with Django's default of 0, closing the
connection after every invocation, as a web request would, made each one reconnect and
prepare its statements again (a sixth of the throughput on PostgreSQL). Task code, on the
other hand, expects what a request gets: connections renewed per ``CONN_MAX_AGE``, checked
per ``CONN_HEALTH_CHECKS``, and nothing left over from the previous task.

So, while a task's function runs, pynenc's alias points at a second connection of the
worker's thread, recycled before and after the function by ``close_old_connections``
(every other alias too); outside it, at the worker's own, which stays open and is closed
only once it is broken (:func:`check_worker_connection`). Everything the task code does
on the alias, its own queries and pynenc's (``.delay()``, ``enqueue_on_commit`` inside
its ``transaction.atomic()``), goes through the task's connection, so a task's
submissions still commit, or roll back, with its own writes. A task that does not touch
the database never opens the second connection.

The worker's own connection also gets its database's set-up for pynenc's statements
(:attr:`~pynenc_django.vendors.base.Vendor.own_connection_setup`) each time it opens; a
task's never does.

The boundary is pynenc's call of the task's function (``run_task_sync`` in
:mod:`pynenc.invocation.dist_invocation`), wrapped in the worker process only, for the
threads that :func:`enable` it. A nested run inside a wait stays on the task's connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pynenc.invocation import dist_invocation

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("pynenc_django")


class _ThreadState(threading.local):
    alias: str | None = None  # set by enable(): this thread swaps connections
    set_up = False  # enable(): the worker's own connection gets its database's set-up
    task_connection: BaseDatabaseWrapper | None = None
    depth = 0  # task functions running in this thread (nested runs inside waits)


_state = _ThreadState()
_original_run_task_sync: Callable[..., Any] | None = None


def enable(alias: str, set_up: bool = True) -> None:
    """Give task functions run by this thread a connection of their own on ``alias``;
    ``set_up``: the worker's own connection gets its database's set-up (not behind a
    transaction-mode pooler: a session setting would reach whichever client gets the
    server connection next)."""
    global _original_run_task_sync
    from django.db import connections
    from django.db.backends.signals import connection_created

    if _original_run_task_sync is None:
        _original_run_task_sync = dist_invocation.run_task_sync
        dist_invocation.run_task_sync = _run_task_sync
    _state.alias = alias
    _state.set_up = set_up
    connection_created.connect(_own_connection_created, dispatch_uid=__name__)
    if set_up and connections[alias].connection is not None:  # opened before: set up now
        _set_up_own_connection(connections[alias])


def disable() -> None:
    """Stop swapping in this thread and close the task connection it kept."""
    task_connection, _state.task_connection, _state.alias = _state.task_connection, None, None
    if task_connection is not None:
        _close_quietly(task_connection)


def _own_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Django's ``connection_created``, sent in the thread that connects: the worker's own
    connection is this thread's on its alias, outside a task's function."""
    if connection.alias == _state.alias and _state.set_up and not in_task():
        _set_up_own_connection(connection)


def _set_up_own_connection(connection: BaseDatabaseWrapper) -> None:
    from pynenc_django.vendors import vendor_of

    statements = vendor_of(connection).own_connection_setup
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


def in_task() -> bool:
    """Whether this thread runs a task's function now (on the task's connection)."""
    return _state.depth > 0


def _run_task_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    assert _original_run_task_sync is not None
    alias = _state.alias
    if alias is None or _state.depth:
        return _original_run_task_sync(func, *args, **kwargs)
    from django.db import close_old_connections, connections

    worker_connection = connections[alias]
    if _state.task_connection is None:
        _state.task_connection = connections.create_connection(alias)
    connections[alias] = _state.task_connection
    _state.depth += 1
    try:
        close_old_connections()  # as at a request's start
        return _original_run_task_sync(func, *args, **kwargs)
    finally:
        _state.depth -= 1
        try:
            close_old_connections()  # as at a request's end
        except Exception as exc:  # a broken connection that failed to close: drop it
            logger.warning(f"Closing a task's connections failed: {type(exc).__name__}: {exc}")
            _state.task_connection = None
        connections[alias] = worker_connection


def check_worker_connection(alias: str) -> None:
    """Between invocations: close the worker's own connection on ``alias`` only if it is
    broken (an error occurred and it no longer answers) or a task left it outside
    autocommit; Django reopens it on next use. Its age does not matter."""
    from django.db import connections

    if in_task():
        return  # a nested run inside a wait: the task's connection, the task's business
    connection = connections[alias]
    if connection.connection is None or connection.in_atomic_block:
        return
    if connection.autocommit != connection.settings_dict["AUTOCOMMIT"] or (
        connection.errors_occurred and not connection.is_usable()
    ):
        _close_quietly(connection)
    else:
        connection.errors_occurred = False


def _close_quietly(connection: BaseDatabaseWrapper) -> None:
    try:
        connection.close()
    except Exception as exc:
        logger.warning(f"Closing connection {connection.alias} failed: {type(exc).__name__}: {exc}")
