"""What every Django backend (orchestrator, broker, state backend, trigger, client
data store) shares: its alias, its retry budget, its vendor, lazy model access."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from pynenc_django.db.connections import get_connection
from pynenc_django.db.statements import hot_cursor, insert_rows
from pynenc_django.db.transactions import write_transaction
from pynenc_django.vendors import Vendor, vendor_of
from pynenc_django.vendors.base import ClaimTables

if TYPE_CHECKING:
    from datetime import datetime

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Model
    from pynenc.app import Pynenc

    from pynenc_django.broker import DjangoBroker
    from pynenc_django.state_backend import DjangoStateBackend
    from pynenc_django.store import InvocationStore

logger = logging.getLogger("pynenc_django")


class DjangoBackendMixin:
    """What every Django backend shares: its alias, retry budget and lazy model access."""

    conf: Any
    app: Pynenc

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
    def dialect(self) -> Vendor:
        """What this alias's database does differently (:mod:`pynenc_django.vendors`)."""
        return vendor_of(self.connection)

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

    # For code that runs only where the app's broker or state backend is ours (it
    # :meth:`shares_database`, or the SQL that fed it joined their tables): typed as ours,
    # not checked again.

    @property
    def _django_broker(self) -> DjangoBroker:
        return cast("DjangoBroker", self.app.broker)

    @property
    def _django_state_backend(self) -> DjangoStateBackend:
        return cast("DjangoStateBackend", self.app.state_backend)

    @cached_property
    def store(self) -> InvocationStore:
        """What this process knows of the app's invocations on this alias, shared by
        the components (:mod:`pynenc_django.store`)."""
        from pynenc_django.store import store_of

        return store_of(self.app, self.db_alias)

    @cached_property
    def claim_tables(self) -> ClaimTables:
        """The tables of a claim's statements (:meth:`Vendor.claim_sql`), on this alias."""
        from pynenc_django.broker import queue_order
        from pynenc_django.models import (
            BrokerMessage,
            Invocation,
            InvocationHistory,
            StateInvocation,
        )
        from pynenc_django.state_backend import INVOCATION_FIELDS

        return ClaimTables(
            messages=self._table(BrokerMessage),
            invocations=self._table(Invocation),
            history=self._table(InvocationHistory),
            state=self._table(StateInvocation),
            queue_order=queue_order(),
            state_fields=tuple(INVOCATION_FIELDS),
        )

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
        return self.dialect.commits_async and bool(self.conf.django_async_claim_commits)

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
