"""Database plumbing shared by every Django backend.

Three concerns live here and nowhere else:

* **Lazy Django.** pynenc imports every plugin module at every ``Pynenc()``, in processes
  that may never have configured Django, and tolerates only ``ImportError``. Backends
  therefore reach Django through :func:`ensure_django` on first use, never at import.
* **Transactions that serialise writers on every vendor.** :func:`write_transaction`
  opens ``BEGIN IMMEDIATE`` on SQLite whatever the project's ``transaction_mode``, so a
  read-validate-write never deadlocks on a lock upgrade; PostgreSQL and MariaDB rely on
  row locks and conditional updates inside a normal transaction.
* **Transient errors.** :func:`retry_transient` retries lock timeouts, deadlocks,
  serialization failures and dropped connections with jittered exponential backoff, and
  only when no outer transaction would be left half-done. Anything else propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cached_property
from itertools import chain
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Model

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


def in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@functools.cache
def _async_bridge() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="pynenc-django-sync")


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
            return _async_bridge().submit(wrapper, *args, **kwargs).result()
        backend: Any = args[0]
        connection = get_connection(backend.db_alias)
        close_when_thread_ends(backend.db_alias, connection)
        with fork_guard:
            return _call_with_retries(method, connection, backend, args, kwargs)

    return wrapper


def _call_with_retries[R](
    method: Callable[..., R], connection: Any, backend: Any, args: Any, kwargs: Any
) -> R:
    if connection.in_atomic_block:
        return method(*args, **kwargs)
    retries = backend.transient_retries
    attempt = 0
    while True:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            lost = is_connection_lost(exc)
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


class _ForkGuard:
    """Keeps ``fork()`` from happening while another thread is inside a database call.

    pynenc's ProcessRunner and MultiThreadRunner fork from a runner thread while other
    threads keep querying. A child forked while another thread held a database library's
    global mutex (SQLite's VFS lock, taken on every transaction) inherits it locked and
    hangs on its first connection. Backend calls share this guard; a fork waits until
    no *other* thread is inside one, and the child starts with a fresh guard.
    """

    def __init__(self) -> None:
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
        self._cond.wait_for(lambda: self._active <= mine, timeout=5.0)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        depth = getattr(self._local, "depth", 0)
        self.__init__()  # type: ignore[misc]  # other threads do not exist in the child
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


def hot_cursor(connection: BaseDatabaseWrapper, prepare: bool) -> Any:
    """A cursor for fixed hot-path SQL (several statements per invocation).

    With ``prepare`` on PostgreSQL and psycopg 3, its statements are prepared on the
    server, once per connection and SQL text: parsing and planning them again was a
    fifth of the server's CPU per invocation. Django never prepares by default
    (``prepare_threshold`` None), for transaction-mode poolers, which cannot carry
    prepared statements; the ``django_prepared_statements`` setting turns this off for
    them. Statements still pass Django's ``execute_wrapper``\\s, as on any cursor.
    """
    cursor_class = (
        _prepared_cursor_class() if prepare and connection.vendor == "postgresql" else None
    )
    if cursor_class is None:
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = connection.connection
        if raw.prepare_threshold is None:
            # None disables preparing on the connection; a threshold never reached
            # enables it for explicit requests only (the ORM's queries stay unprepared).
            raw.prepare_threshold = NEVER_BY_COUNT
        cursor = cursor_class(raw)
        # As Django's create_cursor: timestamps in the connection's time zone.
        from django.db.backends.postgresql.psycopg_any import register_tzloader
        from psycopg.pq import Format

        timestamptz = raw.adapters.types["timestamptz"].oid
        if connection.timezone != raw.adapters.get_loader(timestamptz, Format.TEXT).timezone:  # type: ignore[attr-defined]
            register_tzloader(connection.timezone, cursor)
    return connection._prepare_cursor(cursor)  # type: ignore[attr-defined]


NEVER_BY_COUNT = 2**31 - 1

#: Appended to a PostgreSQL statement's WHERE clause: its transaction commits without
#: waiting for the WAL flush (``django_async_claim_commits``); reverts when it ends.
NO_FLUSH_CONDITION = " AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'"


@functools.cache
def _prepared_cursor_class() -> type | None:
    """Django's server-binding psycopg 3 cursor, preparing every statement it runs."""
    try:
        from django.db.backends.postgresql.base import ServerBindingCursor  # type: ignore[attr-defined]
    except ImportError:  # psycopg 2: no server-side binding
        return None

    class PreparedCursor(ServerBindingCursor):  # type: ignore[misc, valid-type]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, **{**kwargs, "prepare": True})

    return PreparedCursor


def raw_delete(queryset: Any) -> int:
    """DELETE matching rows in one statement, for models nothing else references.

    ``QuerySet.delete()`` wraps even a fast delete in a transaction of its own, which is
    an extra ``BEGIN`` on SQLite for a single statement that is atomic anyway.
    """
    return int(queryset._raw_delete(queryset.db))


@contextmanager
def write_transaction(alias: str) -> Iterator[None]:
    """An ``atomic()`` block that takes the write lock up front on SQLite.

    SQLite's default ``BEGIN DEFERRED`` lets two connections read the same row and then
    fail to upgrade to a write lock ("database is locked", with no busy wait). Forcing
    ``BEGIN IMMEDIATE`` for our own outermost blocks makes every read-validate-write
    serialise cleanly, independent of the project's ``transaction_mode`` option.
    """
    from django.db import transaction

    connection = get_connection(alias)
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic(using=alias):
            yield
        return
    # Connect first: Django resets ``transaction_mode`` from OPTIONS when it (re)connects,
    # which would silently turn our BEGIN IMMEDIATE back into a deferred BEGIN.
    connection.ensure_connection()
    previous = getattr(connection, "transaction_mode", None)
    connection.transaction_mode = "IMMEDIATE"  # type: ignore[attr-defined]
    try:
        atomic = transaction.atomic(using=alias)
        atomic.__enter__()
    finally:
        connection.transaction_mode = previous  # type: ignore[attr-defined]
    try:
        yield
    except BaseException:
        if not atomic.__exit__(*sys.exc_info()):
            raise
    else:
        atomic.__exit__(None, None, None)


class DjangoBackendMixin:
    """What every Django backend shares: its alias, retry budget and lazy model access."""

    conf: Any

    @property
    def db_alias(self) -> str:
        return str(self.conf.django_db_alias)

    @property
    def transient_retries(self) -> int:
        return int(self.conf.django_transient_retries)

    @property
    def connection(self) -> BaseDatabaseWrapper:
        return get_connection(self.db_alias)

    @property
    def vendor(self) -> str:
        return self.connection.vendor

    def write_transaction(self) -> Any:
        return write_transaction(self.db_alias)

    # Hot paths (several per invocation) run fixed SQL: building the same ORM query
    # again costs 5-20 times the CPU of sending it, which caps a worker's throughput.

    def _table(self, model: type[Model]) -> str:
        return self.connection.ops.quote_name(model._meta.db_table)

    def shares_database(self, component: object) -> bool:
        """Whether another pynenc component is one of ours on this same database, so one
        statement or transaction may span both."""
        return isinstance(component, DjangoBackendMixin) and component.db_alias == self.db_alias

    @cached_property
    def prepares(self) -> bool:
        """Whether fixed SQL is prepared on the server (see :func:`hot_cursor`)."""
        return bool(self.conf.django_prepared_statements)

    def _cursor(self, prepare: bool = True) -> Any:
        """A cursor for SQL of a fixed shape (``prepare``) or of varying shape."""
        return hot_cursor(self.connection, prepare and self.prepares)

    def _fetch(
        self, sql: str, params: Sequence[Any], prepare: bool = True
    ) -> list[tuple[Any, ...]]:
        with self._cursor(prepare) as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def _execute(self, sql: str, params: Sequence[Any]) -> int:
        """Run a write of a fixed shape; its row count."""
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

    @cached_property
    def commits_claims_async(self) -> bool:
        """Whether claims and RUNNING skip the WAL flush (``django_async_claim_commits``)."""
        return self.vendor == "postgresql" and bool(self.conf.django_async_claim_commits)

    def _db_time(self, value: datetime) -> Any:
        """A datetime as the ORM would send it (MySQL and SQLite want naive UTC strings)."""
        return self.connection.ops.adapt_datetimefield_value(value)

    def _upsert(
        self,
        model: type[Model],
        rows: Sequence[Model],
        unique_fields: list[str],
        update_fields: list[str],
    ) -> None:
        insert_rows(self.db_alias, model, rows, unique_fields, update_fields, self.prepares)


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


def _after_fork_in_child() -> None:
    fork_guard.after_fork_in_child()
    _async_bridge.cache_clear()  # the parent's pool threads do not exist in the child
    _drop_inherited_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=fork_guard.before_fork,
        after_in_parent=fork_guard.after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


# Characters of text per multi-row INSERT: with utf8mb4 at most 8 MiB, below MariaDB's
# default 16 MiB max_allowed_packet even when many rows carry large inline arguments.
STATEMENT_CHARS = 2_000_000
STATEMENT_ROWS = 500


def size_batches[M](rows: Sequence[M]) -> Iterator[list[M]]:
    """Split rows into INSERT-sized batches by row count and by the text they carry."""
    batch: list[M] = []
    size = 0
    for row in rows:
        chars = sum(len(v) for v in vars(row).values() if isinstance(v, str))
        if batch and (len(batch) >= STATEMENT_ROWS or size + chars > STATEMENT_CHARS):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += chars
    if batch:
        yield batch


class StatementPart:
    """One gathered write of :func:`one_statement`: the body of a WITH item, and an
    optional final SELECT over it (``{cte}`` names the item)."""

    __slots__ = ("body", "params", "tail", "tail_params", "prepare")

    def __init__(
        self,
        body: str,
        params: Sequence[Any],
        prepare: bool,
        tail: str | None = None,
        tail_params: Sequence[Any] = (),
    ) -> None:
        self.body, self.params, self.prepare = body, list(params), prepare
        self.tail, self.tail_params = tail, list(tail_params)


_gathering = threading.local()


@contextmanager
def one_statement(alias: str, enabled: bool = True) -> Iterator[None]:
    """PostgreSQL: the INSERTs made inside (:func:`insert_rows`, the broker's
    insert-and-notify) on ``alias`` run at the end as one data-modifying ``WITH``
    statement. One statement is atomic on its own, so a submit's state row, REGISTERED
    row and queue message need no transaction: one round trip instead of five (BEGIN,
    three INSERTs, COMMIT). Only writes whose results nobody reads before the end may be
    gathered; an exception inside discards them. Elsewhere, or nested, a no-op.
    """
    if not enabled or get_connection(alias).vendor != "postgresql" or gathered(alias) is not None:
        yield
        return
    parts: list[StatementPart] = []
    by_alias = getattr(_gathering, "by_alias", None)
    if by_alias is None:
        by_alias = _gathering.by_alias = {}
    by_alias[alias] = parts
    try:
        yield
    finally:
        del by_alias[alias]
    if parts:
        sql, params = combine_parts(parts)
        with hot_cursor(get_connection(alias), all(part.prepare for part in parts)) as cursor:
            cursor.execute(sql, params)


def gathered(alias: str) -> list[StatementPart] | None:
    """The writes :func:`one_statement` is gathering on ``alias``, if it is."""
    by_alias = getattr(_gathering, "by_alias", None)
    return None if by_alias is None else by_alias.get(alias)


def combine_parts(parts: Sequence[StatementPart]) -> tuple[str, list[Any]]:
    """``WITH p0 AS (...), p1 AS (...) <tails or SELECT 1>``. PostgreSQL runs every
    data-modifying WITH item exactly once, referenced or not."""
    if len(parts) == 1 and parts[0].tail is None:
        return parts[0].body, parts[0].params
    items, tails, params, tail_params = [], [], [], []
    for n, part in enumerate(parts):
        items.append(f"p{n} AS ({part.body})")
        params += part.params
        if part.tail is not None:
            tails.append(part.tail.format(cte=f"p{n}"))
            tail_params += part.tail_params
    return (
        f"WITH {', '.join(items)} {' UNION ALL '.join(tails) or 'SELECT 1'}",
        params + tail_params,
    )


def insert_rows(
    alias: str,
    model: type[Model],
    rows: Sequence[Model],
    unique_fields: Sequence[str] = (),
    update_fields: Sequence[str] | None = None,
    prepare: bool = False,
) -> None:
    """INSERT model instances with fixed SQL: what ``bulk_create`` sends, at a fraction of
    its CPU (it compiles a new query every call; these run several times per invocation).

    With ``unique_fields``, a row colliding on them updates ``update_fields``, or is
    skipped if there are none. MariaDB/MySQL's ``ON DUPLICATE KEY`` names no key; every
    model we write this way has exactly one unique key, which makes the two equivalent.
    Values are prepared by each field, as the ORM does. Batches beyond one statement
    share a transaction. ``prepare``: a single row's INSERT (one shape per model) is
    prepared, as :func:`hot_cursor` says.
    """
    if not rows:
        return
    from django.db import transaction

    connection = get_connection(alias)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]  # type: ignore[attr-defined]
    batches = list(size_batches(rows))
    parts = gathered(alias) if len(batches) == 1 else None
    with transaction.atomic(using=alias) if len(batches) > 1 else contextlib.nullcontext():
        for batch in batches:
            arrays = len(batch) > 1 and _inserts_arrays(connection.vendor, model)
            sql = _insert_sql(
                connection.alias,
                connection.vendor,
                model,
                0 if arrays else len(batch),
                tuple(unique_fields),
                tuple(update_fields) if update_fields is not None else None,
            )
            values = [
                [
                    field.get_db_prep_save(getattr(row, field.attname), connection)
                    for field in fields
                ]
                for row in batch
            ]
            # Arrays: one parameter per column, whatever the rows (see _insert_sql).
            params = [list(c) for c in zip(*values, strict=True)] if arrays else [*chain(*values)]
            fixed_text = prepare and (arrays or len(batch) == 1)
            if parts is not None:
                parts.append(StatementPart(sql, params, fixed_text))
                continue
            with hot_cursor(connection, fixed_text) as cursor:
                cursor.execute(sql, params)


@functools.cache
def _inserts_arrays(vendor: str, model: type[Model]) -> bool:
    """Whether several rows go in as one array per column (PostgreSQL, plain columns)."""
    return vendor == "postgresql" and not any(
        f.get_internal_type() == "JSONField"
        for f in model._meta.concrete_fields  # type: ignore[attr-defined]
    )


@functools.cache
def _insert_sql(
    alias: str,
    vendor: str,
    model: type[Model],
    rows: int,
    unique: tuple[str, ...],
    update: tuple[str, ...] | None,
) -> str:
    connection = get_connection(alias)
    qn = connection.ops.quote_name
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]  # type: ignore[attr-defined]
    columns = ", ".join(qn(f.column) for f in fields)
    if rows:
        source = "VALUES " + ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * rows)
    else:
        # PostgreSQL, any number of rows: one array per column, so one text whatever the
        # batch. psycopg caches its parsing (a long VALUES list is re-parsed every call,
        # most of a batch submit's CPU) and the server may prepare it.
        arrays = ", ".join(f"%b::{f.db_type(connection)}[]" for f in fields)
        source = f"SELECT * FROM unnest({arrays})"
    verb, suffix = "INSERT", ""
    if unique and vendor == "mysql":
        if update:
            suffix = " ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{qn(c)} = VALUES({qn(c)})" for c in update
            )
        else:
            verb = "INSERT IGNORE"
    elif unique:
        target = ", ".join(qn(c) for c in unique)
        if update:
            suffix = f" ON CONFLICT ({target}) DO UPDATE SET " + ", ".join(
                f"{qn(c)} = EXCLUDED.{qn(c)}" for c in update
            )
        else:
            suffix = f" ON CONFLICT ({target}) DO NOTHING"
    table = qn(model._meta.db_table)  # type: ignore[attr-defined]
    return f"{verb} INTO {table} ({columns}) {source}{suffix}"
