"""Queries the admin must keep cheap on tables of millions of rows.

Every helper here reads through an index whose first column is ``app_id``:

* :func:`distinct_values` lists the values of an indexed column with one index probe per
  value (a "skip scan"), instead of the ``SELECT DISTINCT`` full scans that Django's
  ``AllValuesFieldListFilter`` and ``date_hierarchy`` run.
* :func:`capped_count` counts at most ``cap`` rows; :func:`estimated_count` asks the
  planner instead of counting when the exact number does not matter.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db import connections
from django.db.models import DateTimeField, Field, Model, QuerySet, Value

from pynenc_django.db import column_name
from pynenc_django.vendors import vendor_of

#: Most values any filter sidebar lists; more would be unusable anyway.
MAX_CHOICES = 200


def distinct_values(
    model: type[Model],
    column: str,
    *,
    using: str,
    app_id: str | None = None,
    limit: int = MAX_CHOICES,
) -> list[str]:
    """Distinct non-null values of ``column`` (of the rows of ``app_id``, if given), sorted.

    Needs an index on ``(column, ...)``, or on ``(app_id, column, ...)`` with ``app_id``.
    PostgreSQL (before 18) and SQLite have no loose index scan, so a recursive query jumps
    from one value to the next; MariaDB/MySQL do it themselves for ``DISTINCT`` over an
    index prefix ("Using index for group-by").
    """
    connection = connections[using]
    qn = connection.ops.quote_name
    field = model._meta.get_field(column)
    if not isinstance(field, Field):
        raise ValueError(f"{model.__name__}.{column} is a relation, not a column")
    table, col = qn(model._meta.db_table), qn(column_name(field))
    scope, params = ("", []) if app_id is None else (f"{qn('app_id')} = %s AND ", [app_id])
    sql, scopes = vendor_of(connection).distinct_values_sql(table, col, scope)
    args: list[str | int] = [*params * scopes, limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return [row[0] for row in cursor.fetchall()]


def capped_count(queryset: QuerySet, cap: int) -> int:
    """``min(count, cap)``: reads at most ``cap`` index entries, however big the table.

    Only the keys are counted: the list's annotations (runner names, task names: scalar
    subqueries) would otherwise run for every counted row.
    """
    return queryset.order_by().values("pk")[:cap].count()


def capped_counts(querysets: dict[str, QuerySet], cap: int, *, using: str) -> dict[str, int]:
    """``{label: min(count, cap)}`` for several querysets in one round trip.

    Each count reads at most ``cap`` index entries; the querysets should select columns of
    the index they use (``app_id``) so PostgreSQL can answer from the index alone.
    """
    if not querysets:
        return {}
    parts, params = [], []
    for label, qs in querysets.items():
        sql, qs_params = qs.order_by().values_list("app_id")[:cap].query.sql_with_params()
        parts.append(f"SELECT %s, (SELECT COUNT(*) FROM ({sql}) capped)")
        params += [label, *qs_params]
    rows = execute(using, " UNION ALL ".join(parts), params)
    return {label: int(count) for label, count in rows}


def estimated_count(queryset: QuerySet) -> int | None:
    """The planner's row estimate for ``queryset`` (PostgreSQL, MariaDB/MySQL), else ``None``.

    One ``EXPLAIN`` costs about a millisecond whatever the table size; PostgreSQL's estimate
    for equality on ``app_id``/``status`` comes from column statistics and is usually within
    a few percent after ``ANALYZE``.
    """
    qs = queryset.order_by()
    return vendor_of(connections[qs.db]).estimated_count(qs)


def estimated_counts(querysets: dict[str, QuerySet], *, using: str) -> dict[str, int] | None:
    """``{label: the planner's row estimate}`` for several querysets in one ``EXPLAIN`` of
    their ``UNION ALL`` (PostgreSQL, MariaDB/MySQL); ``None`` where there is no estimate
    (SQLite) or the plan is not one part per queryset.

    What :func:`estimated_count` does for one list, for a page of counts: one round trip
    whatever their number, and about a millisecond of planning whatever the table sizes.
    """
    connection = connections[using]
    if not querysets:
        return None
    parts: list[str] = []
    params: list[Any] = []
    for qs in querysets.values():
        sql, qs_params = qs.order_by().values_list("app_id").query.sql_with_params()
        parts.append(sql)
        params += qs_params
    labels = list(querysets)
    with connection.cursor() as cursor:
        rows = vendor_of(connection).union_row_estimates(
            cursor, " UNION ALL ".join(parts), params, len(labels)
        )
    if rows is None or len(rows) != len(labels):
        return None
    return {label: int(n) for label, n in zip(labels, rows, strict=True)}


def datetime_value(value: Any, *, using: str) -> datetime.datetime | None:
    """A ``DateTimeField`` value read by raw SQL, converted as the ORM would (SQLite
    returns text, MariaDB naive times)."""
    connection = connections[using]
    expression = Value(None, output_field=DateTimeField())
    for converter in connection.ops.get_db_converters(expression):
        value = converter(value, expression, connection)
    return value


def fast_count(queryset: QuerySet, cap: int) -> tuple[int, bool]:
    """``(count, exact)``: exact up to ``cap``, beyond it the planner's estimate (or exact
    on SQLite, which has no estimate and is not meant for millions of rows)."""
    exact = capped_count(queryset, cap + 1)
    if exact <= cap:
        return exact, True
    # The keys alone: the list's annotations (scalar subqueries) only cost planning time.
    estimate = estimated_count(queryset.values("pk"))
    if estimate is None:
        return queryset.order_by().count(), True
    return max(estimate, exact), False


def execute(using: str, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
