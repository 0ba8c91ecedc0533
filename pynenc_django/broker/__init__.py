"""Broker on the Django ORM: a table of queued invocation ids.

Popping a message claims it with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL
and MariaDB (concurrent workers take different rows instead of queueing on one lock) and
inside an IMMEDIATE transaction on SQLite. The DELETE is the proof of ownership, so a
message can never be handed to two workers. On PostgreSQL and SQLite the pop is a single
``DELETE ... RETURNING``; on PostgreSQL, enqueueing also sends ``NOTIFY`` in the same
statement, so idle workers wake at once (see :mod:`pynenc_django.wakeup`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from pynenc.identifiers.invocation_id import InvocationId

from pynenc_django.broker.delayed import DelayedMixin, DueClock
from pynenc_django.conf import ConfigBrokerDjango
from pynenc_django.db import (
    StatementPart,
    combine_parts,
    ensure_django,
    gathered,
    retry_transient,
)
from pynenc_django.db.statements import Same, insert_columns
from pynenc_django.utils import chunked
from pynenc_django.wakeup import notify_channel, signal_after_commit

# Rows per INSERT ... NOTIFY statement: 5 parameters each, far below PostgreSQL's 65,535.
NOTIFY_INSERT_CHUNK = 1000


def queue_order(alias: str = "") -> str:
    """The order messages leave a queue: highest priority first, then by the time the
    invocation was first queued (a rerouted one keeps its place, see
    :meth:`DjangoBroker.requeue_invocation`), then FIFO. Index ``pynenc_broker_order_idx``."""
    prefix = f"{alias}." if alias else ""
    return f"{prefix}priority DESC, {prefix}created_at, {prefix}id"


class Popped(NamedTuple):
    """What one pop (:meth:`DjangoBroker.pop`) took, and what it saw of its queue."""

    #: The message's invocation; ``None``: the queue was empty.
    invocation_id: InvocationId | None
    #: The queue's length before the pop, up to 2 (two or more), where the pop tells it
    #: (:attr:`DjangoBroker.pop_looks`); 0: empty, or not told.
    look: int = 0


if TYPE_CHECKING:
    from pynenc.app import Pynenc


class DjangoBroker(DelayedMixin):
    """Priority queues (highest first, then in the order first queued) in one table, and
    messages waiting for their time in another (:mod:`.delayed`)."""

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)
        ensure_django()

    @cached_property
    def conf(self) -> ConfigBrokerDjango:
        return ConfigBrokerDjango(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )

    def _messages(self) -> Any:
        from pynenc_django.models import BrokerMessage

        return BrokerMessage.objects.using(self.db_alias).for_app(self.app.app_id)

    def _route_invocation(
        self, invocation_id: InvocationId, queue_name: str, priority: float
    ) -> None:
        self._route_invocations([invocation_id], queue_name, priority)

    def requeue_invocation(
        self, invocation_id: InvocationId, queue_name: str, priority: float, queued_at: datetime
    ) -> None:
        """Queue a rerouted invocation at its first place (``queued_at``: when it was first
        queued): ahead of what was queued after it, so "rerouted within seconds" holds
        for a long queue too."""
        self._validate_queue_names((queue_name,))
        self._route_invocations([invocation_id], queue_name, priority, queued_at)

    @retry_transient
    def _route_invocations(
        self,
        invocation_ids: Sequence[InvocationId],
        queue_name: str,
        priority: float,
        queued_at: datetime | None = None,
    ) -> None:
        from pynenc_django.models import BrokerMessage

        if not invocation_ids:
            return
        now = queued_at or datetime.now(UTC)
        if self.conf.django_listen_notify and self.dialect.notifies:
            self._insert_and_notify(invocation_ids, queue_name, priority, now)
            return
        insert_columns(
            self.db_alias,
            BrokerMessage,
            {
                "app_id": Same(self.app.app_id),
                "queue": Same(queue_name),
                "priority": Same(priority),
                "invocation_id": list(invocation_ids),
                "created_at": Same(now),
            },
            len(invocation_ids),
        )
        signal_after_commit(self.db_alias, self._work_signal)

    def _insert_and_notify(
        self,
        invocation_ids: Sequence[InvocationId],
        queue_name: str,
        priority: float,
        now: datetime,
    ) -> None:
        """PostgreSQL: the INSERT and its ``NOTIFY`` as one statement (a data-modifying CTE).

        The notification is delivered when the surrounding transaction commits, never
        before the rows are visible.
        """

        from pynenc_django.models import BrokerMessage

        table = self.connection.ops.quote_name(BrokerMessage._meta.db_table)
        channel = notify_channel(self.app.app_id)
        chunks = list(chunked(list(invocation_ids), NOTIFY_INSERT_CHUNK))
        parts = gathered(self.db_alias)  # gathered: every chunk is part of the one statement
        with self.write_transaction() if len(chunks) > 1 and parts is None else nullcontext():
            for chunk in chunks:
                # Several: the ids as one array (binary: a fifth of the text format's CPU),
                # so the text is the same for any count.
                ids = "%s" if len(chunk) == 1 else "unnest(%b::text[])"
                params = [self.app.app_id, queue_name, priority]
                params += [chunk[0] if len(chunk) == 1 else list(chunk), now]
                part = StatementPart(
                    f"INSERT INTO {table} (app_id, queue, priority, invocation_id, created_at) "
                    f"SELECT %s, %s, %s, {ids}, %s RETURNING 1",
                    params,
                    self.prepares,
                    "SELECT pg_notify(%s, %s) FROM (SELECT count(*) FROM {cte}) AS n",
                    [channel, queue_name],
                )
                if parts is not None:  # the submit's one statement (db.one_statement)
                    parts.append(part)
                    continue
                sql, all_params = combine_parts([part])
                with self._cursor(prepare=part.prepare) as cursor:
                    cursor.execute(sql, all_params)

    def retrieve_invocation(self, queue_name: str | None = None) -> InvocationId | None:
        """pynenc's runners' pop; it also moves due delayed messages to their queues
        (looking for them at most once a second): ``pynenc_runner``'s workers do that
        themselves, on time."""
        self.due_clock.promote_if_due()
        return self.pop(queue_name).invocation_id

    @cached_property
    def due_clock(self) -> DueClock:
        """This process's :class:`DueClock` for pynenc's runners (one look a second)."""
        return DueClock(self, refresh_sec=1.0)

    @retry_transient
    def pop(self, queue_name: str | None = None) -> Popped:
        """pynenc's :meth:`retrieve_invocation`, also telling what it saw of the queue
        (:class:`Popped`): returned to the caller, never kept here, since one broker
        serves every thread of the process."""
        queue = self.conf.queues[0] if queue_name is None else queue_name
        self._validate_queue_names((queue,))
        if self._pops_with_returning:
            return Popped(self._pop_returning(queue))
        head_sql, delete_sql = self._head_and_delete_sql
        # Inside a caller's transaction (the orchestrator's claim) no savepoint is needed:
        # nothing between here and the caller can fail and be caught.
        in_caller_transaction = self.connection.in_atomic_block
        while True:
            with nullcontext() if in_caller_transaction else self.write_transaction():
                rows = self._fetch(head_sql, [self.app.app_id, queue] * 2)
                if not rows:
                    return Popped(None)
                message_id, invocation_id, queued, *state_row = rows[0]
                if self._execute(delete_sql, [self.app.app_id, message_id]) == 1:
                    if state_row and state_row[0] is not None:
                        self.store.remember_row(state_row)
                    return Popped(InvocationId(invocation_id), int(queued))

    @cached_property
    def _head_and_delete_sql(self) -> tuple[str, str]:
        """The two-statement pop (MariaDB/MySQL, old SQLite): lock the head (skipping
        heads other workers hold, where the database can), then delete it by id. The head
        also counts the queue up to 2 (:attr:`Popped.look`); with our state backend on the
        same database, it brings the invocation's row along, which the claim reads next."""
        tables = self.claim_tables
        table = tables.messages
        skip = (
            " FOR UPDATE SKIP LOCKED"
            if self.connection.features.has_select_for_update_skip_locked
            else ""
        )
        columns, join = "", ""
        if self.shares_database(self.app.state_backend):
            columns = f", {tables.state_columns('s')}"
            join = (
                f" LEFT JOIN {tables.state} s "
                "ON s.app_id = b.app_id AND s.invocation_id = b.invocation_id"
            )
        return (
            f"SELECT b.id, b.invocation_id, ({self._look_sql}){columns} FROM {table} b{join} "
            f"WHERE b.app_id = %s AND b.queue = %s ORDER BY {queue_order('b')} LIMIT 1{skip}",
            f"DELETE FROM {table} WHERE app_id = %s AND id = %s",
        )

    @property
    def pop_looks(self) -> bool:
        """Whether a pop also tells the queue's length before it (:attr:`Popped.look`), as
        the two-statement pop's head does (a plain read: ``FOR UPDATE`` does not reach
        into subqueries)."""
        return not self._pops_with_returning

    @cached_property
    def _pops_with_returning(self) -> bool:
        """``DELETE ... RETURNING`` with a subquery on the same table (Vendor)."""
        return self.dialect.deletes_returning()

    @property
    def pop_takes_locks(self) -> bool:
        """Whether popping an empty queue still locks (SQLite's write lock, MariaDB's gap
        locks): then idle pollers should look with :meth:`has_invocations` first. On
        PostgreSQL the skip-locked pop of an empty queue locks nothing."""
        return self.dialect.empty_pop_locks

    def _pop_returning(self, queue: str) -> InvocationId | None:
        """Pop the head of ``queue`` in one statement (inside the claim's transaction or
        its own). PostgreSQL skips heads other workers are popping."""

        in_caller_transaction = self.connection.in_atomic_block
        with (
            nullcontext() if in_caller_transaction else self.write_transaction(),
            self._cursor() as cursor,
        ):
            params = [self.app.app_id, queue]
            if self._pop_joins_invocation:
                params.append(self.app.app_id)
            cursor.execute(self._pop_sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        if len(row) > 1 and row[1] is not None:
            self.store.remember_row(row[1:])
        return InvocationId(row[0])

    @cached_property
    def _pop_joins_invocation(self) -> bool:
        """PostgreSQL with our state backend on the same database: the pop also returns
        the invocation's row, which the claim reads next."""
        return self.dialect.writes_in_ctes and self.shares_database(self.app.state_backend)

    @cached_property
    def _pop_sql(self) -> str:
        """``DELETE ... RETURNING`` of the queue's head. On PostgreSQL, with the state
        backend's row of the invocation joined in, which the claim reads next."""
        table = self.claim_tables.messages
        # The claim's transaction (or the pop's own) may skip the WAL flush: a crash that
        # forgets it puts the message back (``django_async_claim_commits``).
        no_flush = self.dialect.no_flush_condition if self.commits_claims_async else ""
        delete = (
            f"DELETE FROM {table} WHERE id = (SELECT id FROM {table} "
            f"WHERE app_id = %s AND queue = %s ORDER BY {queue_order()} LIMIT 1"
            f"{self.dialect.skip_locked}){no_flush} "
            "RETURNING invocation_id"
        )
        if not self._pop_joins_invocation:
            return delete
        return self.dialect.pop_with_state_sql(delete, self.claim_tables)

    @cached_property
    def _look_sql(self) -> str:
        from pynenc_django.models import BrokerMessage

        return (
            f"SELECT count(*) FROM (SELECT 1 FROM {self._table(BrokerMessage)} "
            "WHERE app_id = %s AND queue = %s LIMIT 2) AS head"
        )

    def has_invocations(self, queue_name: str) -> bool:
        """A lock-free look at one queue (:meth:`look`)."""
        return self.look(queue_name) > 0

    @retry_transient
    def look(self, queue_name: str) -> int:
        """A lock-free look at one queue, so idle workers need not take write locks: its
        length, up to 2 (two or more messages). It also tells whether the queue held a
        single message: a worker with notifications that claims it then waits for the next
        announcement instead of looking again."""
        rows = self._fetch(self._look_and_due_sql, [self.app.app_id, queue_name, self.app.app_id])
        if not rows:
            return 0
        self.saw_due(rows[0][1])  # the app's earliest due time, for the worker's DueClock
        return int(rows[0][0])

    @cached_property
    def _look_and_due_sql(self) -> str:
        """:meth:`look`'s statement, also reading the earliest due time of the app's
        delayed messages (one index probe): an idle worker that polls (MariaDB) learns
        it without a statement of its own (:class:`~.delayed.DueClock`)."""
        from pynenc_django.models import DelayedMessage

        return (
            f"SELECT ({self._look_sql}), "
            f"(SELECT MIN(due_at) FROM {self._table(DelayedMessage)} WHERE app_id = %s)"
        )

    @retry_transient
    def count_invocations(self, queue_names: Sequence[str] | None = None) -> int:
        queues = self.conf.queues if queue_names is None else tuple(queue_names)
        self._validate_queue_names(queues)
        if not queues:
            return 0
        return self._messages().filter(queue__in=list(queues)).count()

    @retry_transient
    def purge(self) -> None:
        self._messages().delete()
        self.purge_delayed()
