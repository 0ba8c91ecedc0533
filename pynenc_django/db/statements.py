"""Hot-path SQL: fixed statement texts, prepared where the database can, and INSERTs
built once per shape.

Building the same ORM query again costs 5-20 times the CPU of sending it, which caps a
worker's throughput: the statements run several times per invocation are written once
here (:func:`insert_rows`; :func:`insert_columns` for a batch's many rows, without a
model instance each), gathered into one statement where the database allows it
(:func:`one_statement`) and run through :func:`hot_cursor`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any

from pynenc_django.db.connections import get_connection
from pynenc_django.db.transactions import write_transaction
from pynenc_django.vendors import vendor_of

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Field, Model


logger = logging.getLogger("pynenc_django")


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
        _prepared_cursor_class() if prepare and vendor_of(connection).prepares_statements else None
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
        if connection.timezone != raw.adapters.get_loader(timestamptz, Format.TEXT).timezone:
            register_tzloader(connection.timezone, cursor)
    # Django's private wrapping of a new cursor (CursorWrapper, or the debug one), which
    # its connection.cursor() applies too; django-stubs leaves it out.
    return connection._prepare_cursor(cursor)  # type: ignore[attr-defined]


NEVER_BY_COUNT = 2**31 - 1


@functools.cache
def _prepared_cursor_class() -> type | None:
    """Django's server-binding psycopg 3 cursor, preparing every statement it runs."""
    try:
        from django.db.backends.postgresql.base import ServerBindingCursor
    except ImportError:  # psycopg 2: no server-side binding
        return None

    class PreparedCursor(ServerBindingCursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            # django-stubs declare ServerBindingCursor without its psycopg.Cursor base.
            return super().execute(query, params, **{**kwargs, "prepare": True})  # type: ignore[misc]

    return PreparedCursor


def raw_delete(queryset: Any) -> int:
    """DELETE matching rows in one statement, for models nothing else references.

    ``QuerySet.delete()`` wraps even a fast delete in a transaction of its own, which is
    an extra ``BEGIN`` on SQLite for a single statement that is atomic anyway.
    """
    return int(queryset._raw_delete(queryset.db))


# Characters of text per multi-row INSERT: with utf8mb4 at most 8 MiB, below MariaDB's
# default 16 MiB max_allowed_packet even when many rows carry large inline arguments.
STATEMENT_CHARS = 2_000_000
STATEMENT_ROWS = 500


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
    gathers = vendor_of(get_connection(alias)).writes_in_ctes
    if not enabled or not gathers or gathered(alias) is not None:
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


def pipelines(alias: str) -> bool:
    """Whether :func:`pipelined` would pipeline on ``alias`` now."""
    connection = get_connection(alias)
    return (
        vendor_of(connection).pipelines()
        and not connection.in_atomic_block
        and not getattr(_gathering, "pipelined", False)
    )


@contextmanager
def pipelined(alias: str) -> Iterator[bool]:
    """PostgreSQL with psycopg 3: the statements sent inside do not wait for their
    results, so the caller builds the next one while the server runs this one, and all
    of them are one transaction, committed when the block ends (where their errors are
    raised, as Django's), rolled back whole if anything in it fails. Yields whether it
    pipelines (:func:`pipelines`); where it does not, a no-op."""
    if not pipelines(alias):
        yield False
        return
    connection = get_connection(alias)
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    _gathering.pipelined = True
    try:
        with connection.wrap_database_errors, vendor_of(connection).pipeline(connection):
            yield True
    finally:
        _gathering.pipelined = False


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


class Same:
    """One value for every row of an :func:`insert_columns` batch (a constant column):
    prepared once, and sent once on PostgreSQL."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Same({self.value!r})"


#: A column of :func:`insert_columns`: one value per row, or the same for all.
type Column = Sequence[Any] | Same


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
    See :func:`insert_columns`, which this calls with the rows' columns."""
    if not rows:
        return
    columns = {
        field.attname: [getattr(row, field.attname) for row in rows]
        for field in _insert_fields(model)
    }
    insert_columns(alias, model, columns, len(rows), unique_fields, update_fields, prepare)


def insert_columns(
    alias: str,
    model: type[Model],
    columns: Mapping[str, Column],
    count: int,
    unique_fields: Sequence[str] = (),
    update_fields: Sequence[str] | None = None,
    prepare: bool = False,
) -> None:
    """INSERT ``count`` rows of ``model`` given column by column (by attribute name; a
    field left out takes its default in every row), with fixed SQL and no model instances:
    a batch submit's rows cost a list per column, not an object and a prepared value per
    cell.

    With ``unique_fields``, a row colliding on them updates ``update_fields``, or is
    skipped if there are none. MariaDB/MySQL's ``ON DUPLICATE KEY`` names no key; every
    model we write this way has exactly one unique key, which makes the two equivalent.
    Values are prepared by each field, as the ORM does (a column of plain strings for a
    text field is already what the field would send; a :class:`Same` value is prepared
    once). Rows beyond one statement (:data:`STATEMENT_ROWS`, :data:`STATEMENT_CHARS`)
    share a transaction (the caller's, if it is in one), or, gathered by
    :func:`one_statement`, its one statement.
    ``prepare``: statements of a fixed text (one row, or PostgreSQL's arrays) are prepared,
    as :func:`hot_cursor` says. Where the vendor inserts rows one by one (SQLite), several
    rows are one ``executemany`` of the single-row INSERT.
    """
    if count <= 0:
        return
    unique = tuple(unique_fields)
    update = tuple(update_fields) if update_fields is not None else None
    if count == 1:
        _insert_one(alias, model, columns, unique, update, prepare)
        return
    connection = get_connection(alias)
    prepared: list[Column] = []
    for field in _insert_fields(model):
        column = columns.get(field.attname)
        if column is None:
            column = Same(field.get_default())
        if isinstance(column, Same):
            prepared.append(Same(field.get_db_prep_save(column.value, connection)))
            continue
        if len(column) != count:
            raise ValueError(f"{field.attname}: {len(column)} values for {count} rows")
        prepared.append(_prepared_column(field, column, connection))
    vendor = vendor_of(connection)
    arrays = vendor.inserts_arrays(model) and any(
        not isinstance(column, Same) for column in prepared
    )
    one_by_one = vendor.inserts_rows_one_by_one()
    ranges = _row_ranges(prepared, count)
    parts = gathered(alias)
    # Several statements share a transaction: the caller's if it is in one (no savepoint
    # each), else their own; gathered, they are one statement.
    many = len(ranges) > 1 and parts is None and not connection.in_atomic_block
    with write_transaction(alias) if many else contextlib.nullcontext():
        for start, stop in ranges:
            rows = stop - start
            # One array per varying column, constants once (a column of one value, say
            # all NULL, too): one text for any count.
            sent = [_uniform(c, start, stop) for c in prepared] if arrays and rows > 1 else []
            shape = tuple(isinstance(column, Same) for column in sent)
            if not all(shape):
                sql = _array_insert_sql(alias, model, shape, unique, update)
                params = [c.value for c in sent if isinstance(c, Same)]
                params += [c for c in sent if not isinstance(c, Same)]
                fixed_text = prepare
            else:
                cells = [
                    repeat(c.value, rows) if isinstance(c, Same) else c[start:stop]
                    for c in prepared
                ]
                if one_by_one and rows > 1 and parts is None:
                    with hot_cursor(connection, False) as cursor:
                        cursor.executemany(
                            _insert_sql(alias, model, 1, unique, update),
                            list(zip(*cells, strict=True)),
                        )
                    continue
                sql = _insert_sql(alias, model, rows, unique, update)
                params = list(chain.from_iterable(zip(*cells, strict=True)))
                fixed_text = prepare and rows == 1
            if parts is not None:
                parts.append(StatementPart(sql, params, fixed_text))
                continue
            with hot_cursor(connection, fixed_text) as cursor:
                cursor.execute(sql, params)


def _insert_one(
    alias: str,
    model: type[Model],
    columns: Mapping[str, Column],
    unique: tuple[str, ...],
    update: tuple[str, ...] | None,
    prepare: bool,
) -> None:
    """:func:`insert_columns` of one row (every single submit, three times): its values
    straight into the one-row INSERT, prepared by each field as there."""
    connection = get_connection(alias)
    params: list[Any] = []
    for field in _insert_fields(model):
        column = columns.get(field.attname)
        if column is None:
            value = field.get_default()
        elif isinstance(column, Same):
            value = column.value
        elif len(column) != 1:
            raise ValueError(f"{field.attname}: {len(column)} values for 1 rows")
        else:
            value = column[0]
        if not (type(value) in _TEXT_OR_NONE and _passes_text(field)):
            value = field.get_db_prep_save(value, connection)
        params.append(value)
    sql = _insert_sql(alias, model, 1, unique, update)
    parts = gathered(alias)
    if parts is not None:
        parts.append(StatementPart(sql, params, prepare))
        return
    with hot_cursor(connection, prepare) as cursor:
        cursor.execute(sql, params)


@functools.cache
def _insert_fields(model: type[Model]) -> list[Field[Any, Any]]:
    """The columns an INSERT of ``model`` writes, in the model's order (no primary key)."""
    return [f for f in model._meta.concrete_fields if not f.primary_key]


@functools.cache
def _passes_text(field: Field[Any, Any]) -> bool:
    """Whether the field sends a ``str`` (or ``None``) as it is, on every database."""
    from django.db import models

    return type(field) in (models.CharField, models.TextField)


_TEXT_OR_NONE = frozenset({str, type(None)})


def _prepared_column(
    field: Field[Any, Any], values: Sequence[Any], connection: BaseDatabaseWrapper
) -> Sequence[Any]:
    if _passes_text(field) and set(map(type, values)) <= _TEXT_OR_NONE:
        return values
    return [field.get_db_prep_save(value, connection) for value in values]


def _uniform(column: Column, start: int, stop: int) -> Column:
    """Rows ``start:stop`` of ``column``: as :class:`Same` where they hold one value."""
    if isinstance(column, Same):
        return column
    values = list(column[start:stop])
    first = values[0]
    if values.count(first) == len(values) and (first is None or type(first) is str):
        return Same(first)
    return values


def _row_ranges(columns: Sequence[Column], count: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the rows of each INSERT: at most :data:`STATEMENT_ROWS` rows
    and :data:`STATEMENT_CHARS` characters of text each."""
    constant = sum(len(c.value) for c in columns if isinstance(c, Same) and type(c.value) is str)
    varying = [c for c in columns if not isinstance(c, Same)]
    if count <= STATEMENT_ROWS:
        total = constant * count + sum(
            len(v) for column in varying for v in column if type(v) is str
        )
        if total <= STATEMENT_CHARS:
            return [(0, count)]
    ranges: list[tuple[int, int]] = []
    start, size = 0, 0
    for row in range(count):
        chars = constant + sum(len(v) for c in varying if type(v := c[row]) is str)
        if row > start and (row - start >= STATEMENT_ROWS or size + chars > STATEMENT_CHARS):
            ranges.append((start, row))
            start, size = row, 0
        size += chars
    ranges.append((start, count))
    return ranges


def column_name(field: Field[Any, Any]) -> str:
    """A concrete field's column (Django types it optional: a many-to-many field has none)."""
    if field.column is None:
        raise ValueError(f"{field} has no column")
    return field.column


@functools.cache
def _array_insert_sql(
    alias: str,
    model: type[Model],
    same: tuple[bool, ...],
    unique: tuple[str, ...],
    update: tuple[str, ...] | None,
) -> str:
    """PostgreSQL, any number of rows: one array per varying column and one value per
    constant one (``same``), so one text whatever the batch. psycopg caches its parsing
    (a long VALUES list is re-parsed every call, most of a batch submit's CPU) and the
    server may prepare it. Parameters: the constants, then the arrays, in field order."""
    connection = get_connection(alias)
    qn = connection.ops.quote_name
    fields = _insert_fields(model)
    columns = ", ".join(qn(column_name(f)) for f in fields)
    values: list[str] = []
    arrays: list[str] = []
    for field, constant in zip(fields, same, strict=True):
        db_type = field.db_type(connection)
        if constant:
            values.append(f"%s::{db_type}")
        else:
            values.append(f"u.c{len(arrays)}")
            arrays.append(f"%b::{db_type}[]")
    names = ", ".join(f"c{n}" for n in range(len(arrays)))
    source = f"SELECT {', '.join(values)} FROM unnest({', '.join(arrays)}) AS u({names})"
    verb, suffix = (
        vendor_of(connection).conflict_clause(qn, unique, update) if unique else ("INSERT", "")
    )
    return f"{verb} INTO {qn(model._meta.db_table)} ({columns}) {source}{suffix}"


@functools.cache
def _insert_sql(
    alias: str,
    model: type[Model],
    rows: int,
    unique: tuple[str, ...],
    update: tuple[str, ...] | None,
) -> str:
    connection = get_connection(alias)
    qn = connection.ops.quote_name
    fields = _insert_fields(model)
    columns = ", ".join(qn(column_name(f)) for f in fields)
    source = "VALUES " + ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * rows)
    verb, suffix = (
        vendor_of(connection).conflict_clause(qn, unique, update) if unique else ("INSERT", "")
    )
    table = qn(model._meta.db_table)
    return f"{verb} INTO {table} ({columns}) {source}{suffix}"
