"""PostgreSQL: one-statement writes, prepared hot statements, ``LISTEN``/``NOTIFY``.

Its hot path: the claim is one statement (:meth:`PostgreSQL.claim_sql`: the pop, the
status change and its history in one ``WITH``); the history rows of every other status
change, the waiters' release and the final-status ``NOTIFY`` are triggers of migration
0003; a client waits on that ``NOTIFY`` (:mod:`pynenc_django.wakeup`).
"""

from __future__ import annotations

import contextlib
import functools
import json
from typing import TYPE_CHECKING, Any, ClassVar

from pynenc_django.vendors.base import ClaimTables, Vendor

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Model, QuerySet


class PostgreSQL(Vendor):
    name: ClassVar[str] = "postgresql"
    prepares_statements: ClassVar[bool] = True
    writes_in_ctes: ClassVar[bool] = True
    # Its transaction commits without waiting for the WAL flush (django_async_claim_commits);
    # reverts when it ends.
    no_flush_condition: ClassVar[str] = (
        " AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'"
    )
    # The skip-locked pop of an empty queue locks nothing.
    empty_pop_locks: ClassVar[bool] = False
    skip_locked: ClassVar[str] = " FOR UPDATE SKIP LOCKED"
    notifies: ClassVar[bool] = True
    analyzes_young_tables: ClassVar[bool] = True
    #: A worker's statements all find their rows through an index, and a claim must,
    #: whatever the queue table's statistics say. They say "empty" whenever autovacuum
    #: (or :mod:`~pynenc_django.ops.vacuum`) last looked at a queue the workers kept
    #: empty; planned from them, a claim reads and sorts the whole queue instead of taking
    #: its index's head, and a prepared claim keeps that plan until the table's next
    #: ``VACUUM`` or ``ANALYZE``: for a whole burst of work. Measured on the seeded
    #: benchmark: 0.7 ms per claim with 1,500 messages queued instead of 0.2, growing with
    #: the backlog. A sequential scan stays the plan where no index serves a statement.
    own_connection_setup: ClassVar[tuple[str, ...]] = ("SET enable_seqscan = off",)

    def deletes_returning(self) -> bool:
        return True

    def status_time_after_current(self) -> str:
        return "GREATEST(%s::timestamptz, status_timestamp + interval '1 microsecond')"

    def unindexed(self, column: str) -> str:
        """Compared as an expression, which no index can serve: the row is then always
        found through the unique key. Without statistics (autovacuum off, a young table)
        the planner may otherwise walk an (app_id, status_runner_id, status) or (app_id,
        status, ...) index, every dead version of every PENDING row included, and the
        cost grows with the table."""
        return f"{column} || ''"

    def vacuum_dead(
        self, cursor: Any, tables: Sequence[str], min_dead: int, live_share: float
    ) -> list[tuple[str, int]]:
        """From the statistics' row counts (at most a second or so behind). ``SKIP_LOCKED``:
        a table another process is vacuuming is left to it; ``INDEX_CLEANUP ON``: the
        dead index entries are what claims walk over, and PostgreSQL skips removing them
        when they are few next to the table's pages."""
        cursor.execute(
            "SELECT relname, n_dead_tup FROM pg_stat_user_tables WHERE relname = ANY(%s) "
            "AND schemaname = ANY(current_schemas(false)) "
            "AND n_dead_tup >= GREATEST(%s, n_live_tup * %s)",
            [list(tables), min_dead, live_share],
        )
        due = [(str(table), int(dead)) for table, dead in cursor.fetchall()]
        for table, _ in due:
            cursor.execute(f'VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) "{table}"')
        return due

    @functools.cached_property
    def _pipelines(self) -> bool:
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        if not is_psycopg3:
            return False
        from psycopg import Pipeline

        return Pipeline.is_supported()

    def pipelines(self) -> bool:
        """psycopg 3 (not 2) on a libpq with pipeline mode (14 or later)."""
        return self._pipelines

    @contextlib.contextmanager
    def pipeline(self, connection: BaseDatabaseWrapper) -> Iterator[None]:
        """psycopg 3's pipeline mode, inside a transaction of its own: its implicit one
        (up to the closing ``Sync``) would commit what was sent before an exception
        raised in the block."""
        raw = connection.connection
        with raw.pipeline(), raw.transaction():
            yield

    def inserts_arrays(self, model: type[Model]) -> bool:
        """Plain columns only: a JSON column's array would need a cast per element."""
        return _plain_columns(model)

    def lock_named(self, cursor: Any, key: bytes, timeout: int) -> str | None:
        """``pg_advisory_xact_lock``: released by the transaction's end, whatever it is."""
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(key[:8], "big", signed=True)]
        )
        return None

    def estimated_count(self, queryset: QuerySet[Any, Any]) -> int | None:
        """For equality on ``app_id``/``status`` the estimate comes from column statistics,
        usually within a few percent after ``ANALYZE``."""
        plan = json.loads(queryset.explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])

    def union_row_estimates(
        self, cursor: Any, union: str, params: Sequence[Any], parts: int
    ) -> list[int] | None:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {union}", params)
        plan = cursor.fetchone()[0]
        node = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
        # One part: its own plan; several: an Append of one plan per part, in order.
        if parts > 1 and node["Node Type"] != "Append":
            return None
        nodes = [node] if parts == 1 else node.get("Plans", [])
        return [int(n["Plan Rows"]) for n in nodes]

    def result_length_sql(self, column: str) -> str:
        return f"octet_length({column})"

    def drop_final_edges(
        self,
        tables: tuple[str, str],
        app_id: str,
        waiter_id: str,
        waited: Sequence[str],
        finals: Sequence[str],
    ) -> tuple[str, list[str]]:
        """A statement's snapshot would see a final status committing meanwhile as not
        final yet, while that transaction's own delete (the status trigger) ran before the
        edge was committed: the edge would stay for good. ``FOR SHARE`` waits for that
        commit and reads the status it wrote."""
        edges, invocations = tables
        sql = (
            f"WITH waited AS MATERIALIZED (SELECT i.invocation_id, i.status FROM {invocations} i"
            f" WHERE i.app_id = %s AND i.invocation_id IN ({', '.join(['%s'] * len(waited))})"
            " FOR SHARE)"
            f" DELETE FROM {edges} WHERE app_id = %s AND waiter_id = %s AND waited_id IN"
            " (SELECT invocation_id FROM waited"
            f" WHERE status IN ({', '.join(['%s'] * len(finals))}))"
        )
        return sql, [app_id, *waited, app_id, waiter_id, *finals]

    def claim_sql(self, tables: ClaimTables, *, allowed: str, running: bool, no_flush: str) -> str:
        """The head (skipping heads other workers hold), PENDING for its invocation where
        allowed, and the DELETE only if that happened: the transition is the proof of
        ownership, and a message the fast path may not take stays queued. A stale head
        (its invocation, of a task the fast path knows, is one ``allowed`` refuses:
        taken already, say by a worker that ran it inside a wait, or final) is deleted
        too, as the general path would. Returns the head's invocation id, whether it was
        claimed, whether the message was deleted, the queue's length up to 2 (before the
        claim), and the invocation's state backend row.

        Parameters, in order: app id, queue, status, runner id, time, runner id, app id,
        task keys, blocking ids, ``allowed``'s; with ``running`` PENDING and the runner id
        twice more; app id, task keys, blocking ids, ``allowed``'s again (the stale
        check); then app id, queue, app id. ``running``: the row goes on to RUNNING, 1 µs
        after PENDING; the trigger records RUNNING and the statement itself the PENDING it
        passed through."""
        # The time is taken before the statement finds the message: never before the
        # status it replaces, so the history stays in order.
        status_at = "GREATEST(%s::timestamptz, status_timestamp + interval '1 microsecond')"
        passed_pending = ""
        if running:
            status_at += " + interval '1 microsecond'"
            pending_at = "status_timestamp - interval '1 microsecond'"
            passed_pending = (
                f"passed AS (INSERT INTO {tables.history} (app_id, "
                "invocation_id, timestamp, status, status_runner_id, status_timestamp, "
                f"runner_context_id) SELECT app_id, invocation_id, {pending_at}, %s, %s, "
                f"{pending_at}, %s FROM pend ON CONFLICT DO NOTHING), "
            )
        messages = tables.messages
        return (
            f"WITH head AS (SELECT id, invocation_id FROM {messages} "
            f"WHERE app_id = %s AND queue = %s{no_flush} "
            f"ORDER BY {tables.queue_order} LIMIT 1 FOR UPDATE SKIP LOCKED), "
            f"pend AS (UPDATE {tables.invocations} SET status = %s, status_runner_id = %s, "
            f"status_timestamp = {status_at}, "
            "status_context_id = %s "
            "WHERE app_id = %s AND invocation_id = (SELECT invocation_id FROM head) "
            "AND task_id_key = ANY(%s::text[]) AND invocation_id <> ALL(%s::text[]) "
            f"AND {allowed} "
            "RETURNING app_id, invocation_id, status_timestamp), "
            f"{passed_pending}"
            f"stale AS (SELECT 1 FROM {tables.invocations} WHERE app_id = %s "
            "AND invocation_id = (SELECT invocation_id FROM head) "
            "AND task_id_key = ANY(%s::text[]) AND invocation_id <> ALL(%s::text[]) "
            f"AND NOT {allowed}), "
            f"popped AS (DELETE FROM {messages} WHERE id = (SELECT id FROM head) "
            "AND (EXISTS (SELECT 1 FROM pend) OR EXISTS (SELECT 1 FROM stale)) RETURNING 1) "
            "SELECT h.invocation_id, EXISTS (SELECT 1 FROM pend), EXISTS (SELECT 1 FROM popped), "
            f"(SELECT count(*) FROM (SELECT 1 FROM {messages} WHERE app_id = %s AND queue = %s "
            f"LIMIT 2) AS q), {tables.state_columns('s')} FROM head h "
            f"LEFT JOIN {tables.state} s "
            "ON s.app_id = %s AND s.invocation_id = h.invocation_id"
        )

    def pop_with_state_sql(self, delete: str, tables: ClaimTables) -> str:
        """``delete`` (a ``DELETE ... RETURNING invocation_id``) with the popped
        invocation's state backend row joined in, which the claim reads next (one more
        parameter: the app id)."""
        return (
            f"WITH popped AS ({delete}) SELECT p.invocation_id, {tables.state_columns('s')} "
            f"FROM popped p LEFT JOIN {tables.state} s "
            "ON s.app_id = %s AND s.invocation_id = p.invocation_id"
        )

    def promote_due_sql(self, delayed: str, messages: str, notify: bool) -> str:
        """Move the delayed messages due by a time to their queues, at their due time's
        place, in one statement, and ``NOTIFY`` each queue that got some; returns how many
        moved. Parameters: app id, time, limit, app id; with ``notify`` the channel."""
        announce = (
            ", (SELECT count(pg_notify(%s, queue)) FROM (SELECT DISTINCT queue FROM moved) q)"
            if notify
            else ""
        )
        return (
            f"WITH due AS (DELETE FROM {delayed} WHERE id IN (SELECT id FROM {delayed} "
            "WHERE app_id = %s AND due_at <= %s ORDER BY due_at, id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) RETURNING queue, priority, invocation_id, due_at), "
            f"moved AS (INSERT INTO {messages} (app_id, queue, priority, invocation_id, "
            "created_at) SELECT %s, queue, priority, invocation_id, due_at FROM due "
            "RETURNING queue) "
            f"SELECT (SELECT count(*) FROM moved){announce}"
        )


@functools.cache
def _plain_columns(model: type[Model]) -> bool:
    return not any(f.get_internal_type() == "JSONField" for f in model._meta.concrete_fields)
