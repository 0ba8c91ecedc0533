"""What differs between the databases pynenc-django supports, asked in one place.

Every statement text and capability that depends on the database vendor is a method or
a flag of :class:`Vendor`; :func:`~pynenc_django.vendors.vendor_of` picks the subclass
for a connection once, as Django's ``connection.ops`` does. The rest of the package
never tests ``connection.vendor``: to see what one database does differently, read its
module (``sqlite.py``, ``postgresql.py``, ``mysql.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Model, QuerySet


@dataclass(frozen=True)
class ClaimTables:
    """The quoted table names a claim's statements use, and the queue's order."""

    messages: str
    invocations: str
    history: str
    state: str
    queue_order: str
    #: The state backend's invocation columns, as the claim hands the row on.
    state_fields: tuple[str, ...]

    def state_columns(self, alias: str) -> str:
        return ", ".join(f"{alias}.{field}" for field in self.state_fields)


class Vendor:
    """The defaults, overridden per database by its subclass."""

    #: Django's ``connection.vendor``.
    name: ClassVar[str] = ""
    #: Our write transactions take the write lock at ``BEGIN`` (``BEGIN IMMEDIATE``):
    #: SQLite's deferred ``BEGIN`` cannot upgrade a read lock without failing at once.
    locks_at_begin: ClassVar[bool] = False
    #: A check-then-write on different rows needs a named lock to serialise
    #: (:func:`~pynenc_django.db.named_locks`); SQLite serialises every writer anyway.
    needs_named_locks: ClassVar[bool] = True
    #: Hot statements may be prepared on the server (psycopg 3).
    prepares_statements: ClassVar[bool] = False
    #: Data-modifying ``WITH`` items: several writes (a submit's INSERTs, a claim's pop and
    #: status change, a result and its SUCCESS) are one statement, atomic alone, and a
    #: ``DELETE ... RETURNING`` can bring a joined row along.
    writes_in_ctes: ClassVar[bool] = False
    #: The WHERE-clause condition that makes a statement's transaction skip the WAL flush.
    no_flush_condition: ClassVar[str] = ""
    #: Popping an empty queue still takes locks (SQLite's write lock, MariaDB's gap locks),
    #: so idle pollers look first.
    empty_pop_locks: ClassVar[bool] = True
    #: Appended to a row-locking subquery so concurrent pops skip each other's heads.
    skip_locked: ClassVar[str] = ""
    #: The server pushes notifications to listening connections (``LISTEN``/``NOTIFY``).
    notifies: ClassVar[bool] = False
    #: A signal file beside the data reaches every process using the database.
    signals_reach_every_host: ClassVar[bool] = False
    #: The planner needs a first ``ANALYZE`` of young tables (:mod:`pynenc_django.ops.planner`).
    analyzes_young_tables: ClassVar[bool] = False
    #: ``LIMIT`` is allowed in an ``IN (subquery)``.
    limits_in_subqueries: ClassVar[bool] = True
    #: The database is a server reached over the network or a socket (not a file).
    is_server: ClassVar[bool] = True
    #: What a constant ``SELECT`` without a table needs to select from.
    from_nothing: ClassVar[str] = ""
    #: Run once on each connection a worker opens for its own statements (never on a
    #: task's: :mod:`pynenc_django.runner.task_connections`).
    own_connection_setup: ClassVar[tuple[str, ...]] = ()

    def records_history(self, alias: str) -> bool:
        """Whether triggers of our migrations record each status change in the history and
        release waiters on final statuses (migration 0003)."""
        return True

    @property
    def commits_async(self) -> bool:
        """A transaction may commit without waiting for its WAL flush (``synchronous_commit``)."""
        return bool(self.no_flush_condition)

    def deletes_returning(self) -> bool:
        """``DELETE ... RETURNING`` with a subquery on the same table is available."""
        return False

    def status_time_after_current(self) -> str:
        """The new ``status_timestamp`` of a transition, from its one parameter (the time
        the caller took): never before the status it replaces, strictly after it. The
        time is taken before the statement waits for the row (or SQLite's write lock), so
        a transition that waited behind a racing one would otherwise stamp, and record in
        the history, a time before the status it replaced."""
        return "%s"

    def vacuum_dead(
        self, cursor: Any, tables: Sequence[str], min_dead: int, live_share: float
    ) -> list[tuple[str, int]]:
        """Vacuum each of ``tables`` holding at least ``min_dead`` dead rows and
        ``live_share`` of its live ones; the tables vacuumed, with their dead rows
        (:mod:`pynenc_django.ops.vacuum`). Nothing where deleted rows do not stay behind."""
        return []

    def pipelines(self) -> bool:
        """Statements can be sent without waiting for their results (:meth:`pipeline`)."""
        return False

    def pipeline(self, connection: BaseDatabaseWrapper) -> AbstractContextManager[Any]:
        """Where :meth:`pipelines`: the statements sent inside do not wait for their
        results, and all of them are one transaction, committed at the end unless the
        block raises (:func:`~pynenc_django.db.pipelined`). ``connection`` is open, in no
        transaction."""
        raise NotImplementedError(f"{self.name} has no pipeline mode")

    def unindexed(self, column: str) -> str:
        """``column`` as the WHERE clause of a transition compares it."""
        return column

    def inserts_rows_one_by_one(self) -> bool:
        """Several rows go in as one single-row INSERT run for each (``executemany``),
        not as one statement of many rows: equally fast where the database is a library
        in this process, and each row's text stays short for whoever traces statements."""
        return False

    def inserts_arrays(self, model: type[Model]) -> bool:
        """Several rows of ``model`` go in as one array per column, one text for any count."""
        return False

    def conflict_clause(
        self, qn: Callable[[str], str], unique: Sequence[str], update: Sequence[str] | None
    ) -> tuple[str, str]:
        """``(verb, suffix)`` of an INSERT that skips (``update`` None) or updates the
        ``update`` columns of a row whose ``unique`` columns already exist."""
        target = ", ".join(qn(c) for c in unique)
        if update:
            return "INSERT", f" ON CONFLICT ({target}) DO UPDATE SET " + ", ".join(
                f"{qn(c)} = EXCLUDED.{qn(c)}" for c in update
            )
        return "INSERT", f" ON CONFLICT ({target}) DO NOTHING"

    def lock_named(self, cursor: Any, key: bytes, timeout: int) -> str | None:
        """Take the exclusive lock named by the digest ``key`` until the transaction ends;
        the name to release after it, if the lock outlives the transaction."""
        return None

    def release_named(self, cursor: Any, name: str) -> None:
        """Release a lock :meth:`lock_named` returned the name of."""

    def distinct_values_sql(self, table: str, col: str, scope: str) -> tuple[str, int]:
        """A query for the first distinct non-null values of ``col`` (one ``%s``: the
        limit, after ``scope``'s parameters repeated the returned number of times).

        PostgreSQL (before 18) and SQLite have no loose index scan, so a recursive query
        jumps from one value to the next."""
        return (
            f"WITH RECURSIVE skip(v) AS ("
            f" SELECT MIN({col}) FROM {table} WHERE {scope}{col} IS NOT NULL"
            f" UNION ALL"
            f" SELECT (SELECT MIN({col}) FROM {table} WHERE {scope}{col} > skip.v)"
            f" FROM skip WHERE skip.v IS NOT NULL"
            f") SELECT v FROM skip WHERE v IS NOT NULL LIMIT %s",
            2,
        )

    def estimated_count(self, queryset: QuerySet[Any, Any]) -> int | None:
        """The planner's row estimate for ``queryset``, where one is cheap to get."""
        return None

    def union_row_estimates(
        self, cursor: Any, union: str, params: Sequence[Any], parts: int
    ) -> list[int] | None:
        """The planner's row estimate of each part of ``union`` (a ``UNION ALL`` of
        ``parts`` SELECTs), in order, from one ``EXPLAIN``; None without estimates."""
        return None

    def capped_count_sql(self, table: str, scope: str, cap: int, id_column: str) -> tuple[str, int]:
        """A scalar subquery counting ``table``'s rows (alias ``m``) where ``scope`` holds,
        up to ``cap + 1`` (beyond: "more than ``cap``"), and how many times ``scope``'s
        parameters are needed. A capped range, which the planner costs as one: a count of
        the whole range would cross PostgreSQL's ``jit_above_cost``, and JIT compiling
        costs more than the query."""
        limited = f"SELECT 1 FROM {table} m WHERE {scope} LIMIT {cap + 1}"
        return f"SELECT COUNT(*) FROM ({limited}) capped", 1

    def result_length_sql(self, column: str) -> str:
        """The size in bytes of a stored result ``column``."""
        return f"length(CAST({column} AS BLOB))"

    def drop_final_edges(
        self,
        tables: tuple[str, str],
        app_id: str,
        waiter_id: str,
        waited: Sequence[str],
        finals: Sequence[str],
    ) -> tuple[str, list[str]]:
        """The statement and parameters that delete ``waiter_id``'s edges to those of
        ``waited`` already final (``tables``: the edges', the invocations'), once a final
        status being written meanwhile has committed. MariaDB's InnoDB reads the rows of a
        ``DELETE``'s subquery with a lock, so it waits for that commit; SQLite has one
        writer at a time."""
        edges, invocations = tables
        sql = (
            f"DELETE FROM {edges} WHERE app_id = %s AND waiter_id = %s"
            f" AND waited_id IN ({', '.join(['%s'] * len(waited))})"
            f" AND EXISTS (SELECT 1 FROM {invocations} i WHERE i.app_id = %s"
            f" AND i.invocation_id = {edges}.waited_id"
            f" AND i.status IN ({', '.join(['%s'] * len(finals))}))"
        )
        return sql, [app_id, waiter_id, *waited, app_id, *finals]

    def claim_sql(self, tables: ClaimTables, *, allowed: str, running: bool, no_flush: str) -> str:
        """The one-statement claim, where :attr:`writes_in_ctes` (PostgreSQL's module)."""
        raise NotImplementedError(f"{self.name} has no one-statement claim")

    def pop_with_state_sql(self, delete: str, tables: ClaimTables) -> str:
        """A pop that brings the invocation's row along, where :attr:`writes_in_ctes`."""
        raise NotImplementedError(f"{self.name} cannot join a DELETE's rows")

    def promote_due_sql(self, delayed: str, messages: str, notify: bool) -> str:
        """Delayed messages to their queues in one statement, where :attr:`writes_in_ctes`."""
        raise NotImplementedError(f"{self.name} promotes delayed messages in a transaction")

    def signal_path(self, connection: BaseDatabaseWrapper, signal: str) -> str | None:
        """The file processes touch to announce ``signal`` (:mod:`pynenc_django.wakeup`),
        or ``None`` where there is no file to share."""
        return None
