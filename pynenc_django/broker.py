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
from typing import TYPE_CHECKING, Any

from pynenc.broker.base_broker import BaseBroker
from pynenc.identifiers.invocation_id import InvocationId

from pynenc_django.conf import ConfigBrokerDjango
from pynenc_django.db import (
    NO_FLUSH_CONDITION,
    DjangoBackendMixin,
    StatementPart,
    combine_parts,
    ensure_django,
    gathered,
    insert_rows,
    retry_transient,
)
from pynenc_django.utils import chunked
from pynenc_django.wakeup import notify_channel, signal_after_commit, signal_path, work_signal

# Rows per INSERT ... NOTIFY statement: 5 parameters each, far below PostgreSQL's 65,535.
NOTIFY_INSERT_CHUNK = 1000

if TYPE_CHECKING:
    from pynenc.app import Pynenc


class DjangoBroker(DjangoBackendMixin, BaseBroker):
    """Priority queues (highest first, FIFO within a priority) in one table."""

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

    @retry_transient
    def _route_invocations(
        self, invocation_ids: Sequence[InvocationId], queue_name: str, priority: float
    ) -> None:
        from pynenc_django.models import BrokerMessage

        if not invocation_ids:
            return
        now = datetime.now(UTC)
        if self.conf.django_listen_notify and self.vendor == "postgresql":
            self._insert_and_notify(invocation_ids, queue_name, priority, now)
            return
        insert_rows(
            self.db_alias,
            BrokerMessage,
            [
                BrokerMessage(
                    app_id=self.app.app_id,
                    queue=queue_name,
                    priority=priority,
                    invocation_id=invocation_id,
                    created_at=now,
                )
                for invocation_id in invocation_ids
            ],
        )
        signal_after_commit(self.db_alias, self._work_signal)

    @cached_property
    def _work_signal(self) -> str | None:
        """SQLite: the file idle workers watch for new messages (:mod:`.wakeup`)."""
        if not self.conf.django_listen_notify:
            return None
        return signal_path(self.db_alias, work_signal(self.app.app_id))

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
        from django.db import transaction

        from pynenc_django.models import BrokerMessage

        table = self.connection.ops.quote_name(BrokerMessage._meta.db_table)
        channel = notify_channel(self.app.app_id)
        chunks = list(chunked(list(invocation_ids), NOTIFY_INSERT_CHUNK))
        parts = gathered(self.db_alias) if len(chunks) == 1 else None
        with transaction.atomic(using=self.db_alias) if len(chunks) > 1 else nullcontext():
            for chunk in chunks:
                # Several: the ids as one array, so the text is the same for any count.
                ids = "%s" if len(chunk) == 1 else "unnest(%s::text[])"
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

    @retry_transient
    def retrieve_invocation(self, queue_name: str | None = None) -> InvocationId | None:
        queue = self.conf.queues[0] if queue_name is None else queue_name
        self._validate_queue_names((queue,))
        if self._pops_with_returning:
            return self._pop_returning(queue)
        head_sql, delete_sql = self._head_and_delete_sql
        # Inside a caller's transaction (the orchestrator's claim) no savepoint is needed:
        # nothing between here and the caller can fail and be caught.
        in_caller_transaction = self.connection.in_atomic_block
        while True:
            with nullcontext() if in_caller_transaction else self.write_transaction():
                rows = self._fetch(head_sql, [self.app.app_id, queue] * 2)
                if not rows:
                    self.last_look = 0
                    return None
                message_id, invocation_id, queued, *state_row = rows[0]
                self.last_look = int(queued)
                if self._execute(delete_sql, [self.app.app_id, message_id]) == 1:
                    if state_row and state_row[0] is not None:
                        self.app.state_backend.remember_invocation_row(state_row)  # type: ignore[attr-defined]
                    return InvocationId(invocation_id)

    @cached_property
    def _head_and_delete_sql(self) -> tuple[str, str]:
        """The two-statement pop (MariaDB/MySQL, old SQLite): lock the head (skipping
        heads other workers hold, where the database can), then delete it by id. The head
        also counts the queue up to 2 (:attr:`last_look`); with our state backend on the
        same database, it brings the invocation's row along, which the claim reads next."""
        from pynenc_django.models import BrokerMessage, StateInvocation
        from pynenc_django.state_backend import INVOCATION_FIELDS

        table = self._table(BrokerMessage)
        skip = (
            " FOR UPDATE SKIP LOCKED"
            if self.connection.features.has_select_for_update_skip_locked
            else ""
        )
        columns, join = "", ""
        if self.shares_database(self.app.state_backend):
            columns = "".join(f", s.{field}" for field in INVOCATION_FIELDS)
            join = (
                f" LEFT JOIN {self._table(StateInvocation)} s "
                "ON s.app_id = b.app_id AND s.invocation_id = b.invocation_id"
            )
        return (
            f"SELECT b.id, b.invocation_id, ({self._look_sql}){columns} FROM {table} b{join} "
            f"WHERE b.app_id = %s AND b.queue = %s ORDER BY b.priority DESC, b.id LIMIT 1{skip}",
            f"DELETE FROM {table} WHERE app_id = %s AND id = %s",
        )

    @property
    def pop_looks(self) -> bool:
        """Whether a pop also tells the queue's length before it (:attr:`last_look`), as
        the two-statement pop's head does (a plain read: ``FOR UPDATE`` does not reach
        into subqueries)."""
        return not self._pops_with_returning

    @cached_property
    def _pops_with_returning(self) -> bool:
        """``DELETE ... RETURNING`` with a subquery on the same table: PostgreSQL, and
        SQLite from 3.35 (MariaDB refuses the subquery)."""
        connection = self.connection
        if connection.vendor == "postgresql":
            return True
        return connection.vendor == "sqlite" and connection.Database.sqlite_version_info >= (3, 35)

    @property
    def pop_takes_locks(self) -> bool:
        """Whether popping an empty queue still locks (SQLite's write lock, MariaDB's gap
        locks): then idle pollers should look with :meth:`has_invocations` first. On
        PostgreSQL the skip-locked pop of an empty queue locks nothing."""
        return self.vendor != "postgresql"

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
            self.app.state_backend.remember_invocation_row(row[1:])  # type: ignore[attr-defined]
        return InvocationId(row[0])

    @cached_property
    def _pop_joins_invocation(self) -> bool:
        """PostgreSQL with our state backend on the same database: the pop also returns
        the invocation's row, which the claim reads next."""
        return self.vendor == "postgresql" and self.shares_database(self.app.state_backend)

    @cached_property
    def _pop_sql(self) -> str:
        """``DELETE ... RETURNING`` of the queue's head. On PostgreSQL, with the state
        backend's row of the invocation joined in, which the claim reads next."""
        from pynenc_django.models import BrokerMessage, StateInvocation
        from pynenc_django.state_backend import INVOCATION_FIELDS

        table = self._table(BrokerMessage)
        postgresql = self.connection.vendor == "postgresql"
        # The claim's transaction (or the pop's own) may skip the WAL flush: a crash that
        # forgets it puts the message back (``django_async_claim_commits``).
        no_flush = NO_FLUSH_CONDITION if self.commits_claims_async else ""
        delete = (
            f"DELETE FROM {table} WHERE id = (SELECT id FROM {table} "
            "WHERE app_id = %s AND queue = %s ORDER BY priority DESC, id LIMIT 1"
            f"{' FOR UPDATE SKIP LOCKED' if postgresql else ''}){no_flush} "
            "RETURNING invocation_id"
        )
        if not self._pop_joins_invocation:
            return delete
        columns = ", ".join(f"s.{field}" for field in INVOCATION_FIELDS)
        return (
            f"WITH popped AS ({delete}) SELECT p.invocation_id, {columns} FROM popped p "
            f"LEFT JOIN {self._table(StateInvocation)} s "
            "ON s.app_id = %s AND s.invocation_id = p.invocation_id"
        )

    @cached_property
    def _look_sql(self) -> str:
        from pynenc_django.models import BrokerMessage

        return (
            f"SELECT count(*) FROM (SELECT 1 FROM {self._table(BrokerMessage)} "
            "WHERE app_id = %s AND queue = %s LIMIT 2) AS head"
        )

    #: What the last :meth:`has_invocations` saw: 0, 1, or 2 (two or more messages).
    last_look = 0

    @retry_transient
    def has_invocations(self, queue_name: str) -> bool:
        """A lock-free look at one queue, so idle workers need not take write locks. It
        also tells (:attr:`last_look`) whether the queue held a single message: a worker
        with notifications that claims it then waits for the next announcement instead of
        looking again."""
        rows = self._fetch(self._look_sql, [self.app.app_id, queue_name])
        self.last_look = int(rows[0][0]) if rows else 0
        return self.last_look > 0

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
