"""Status history: the rows pynenc adds on each status change, written one statement per
batch, and read back per invocation or by keyset pages over a time range.

Where the orchestrator's ``history_by_database`` holds, the database's triggers write
the status-change rows instead; the admin writes its records with :meth:`insert_histories`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus, InvocationStatusRecord
from pynenc.runner.runner_context import RunnerContext
from pynenc.state_backend.base_state_backend import InvocationHistory
from pynenc.types import Params, Result

from pynenc_django.db import retry_transient
from pynenc_django.state_backend.core import PAGE_SIZE, StateBackendCore

if TYPE_CHECKING:
    from pynenc.invocation.dist_invocation import DistributedInvocation

# Rows per INSERT statement: keeps statements well inside SQLite's variable limit and
# MariaDB's max_allowed_packet when arguments are large.
INSERT_BATCH_SIZE = 500

_HISTORY_FIELDS = (
    "invocation_id",
    "timestamp",
    "status",
    "status_runner_id",
    "status_timestamp",
    "runner_context_id",
    "registered_by_inv_id",
)


def _aware(value: datetime) -> datetime:
    """Naive datetimes are UTC, as in ``InvocationHistory.from_json``."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _history_from_row(row: tuple[Any, ...]) -> InvocationHistory:
    inv_id, timestamp, status, runner_id, status_ts, runner_ctx_id, registered_by = row
    history = InvocationHistory(
        invocation_id=InvocationId(inv_id),
        status_record=InvocationStatusRecord(
            status=InvocationStatus(status), runner_id=runner_id, timestamp=_aware(status_ts)
        ),
        runner_context_id=runner_ctx_id,
        registered_by_inv_id=registered_by,
    )
    history._timestamp = _aware(timestamp)
    return history


class HistoryMixin(StateBackendCore[Params, Result]):
    """Part of :class:`~pynenc_django.state_backend.DjangoStateBackend`; see the module
    docstring."""

    def _history(self) -> Any:
        from pynenc_django.models import InvocationHistory as HistoryRow

        return HistoryRow.objects.using(self.db_alias).for_app(self.app.app_id)

    def add_histories(
        self,
        invocations: list[DistributedInvocation[Params, Result]],
        status_record: InvocationStatusRecord,
        runner_context: RunnerContext,
    ) -> None:
        """Same records as the base class, written in one statement instead of one per invocation."""
        self.store_runner_context(runner_context)
        registering = status_record.status == InvocationStatus.REGISTERED
        self.insert_histories(
            (
                invocation.invocation_id,
                InvocationHistory(
                    invocation_id=invocation.invocation_id,
                    status_record=status_record,
                    runner_context_id=runner_context.runner_id,
                    registered_by_inv_id=invocation.parent_invocation_id if registering else None,
                ),
            )
            for invocation in invocations
        )

    def _add_histories(
        self, invocation_ids: list[InvocationId], invocation_history: InvocationHistory
    ) -> None:
        self.insert_histories(
            (invocation_id, invocation_history) for invocation_id in invocation_ids
        )

    def insert_histories(self, entries: Iterable[tuple[str, InvocationHistory]]) -> None:
        """Store one history row per ``(invocation_id, record)`` with a single INSERT.

        A record already stored (same invocation, timestamp and status) is skipped, so a
        retried batch never duplicates one."""
        from pynenc_django.models import InvocationHistory as HistoryRow

        rows = [
            HistoryRow(
                app_id=self.app.app_id,
                invocation_id=invocation_id,
                timestamp=_aware(history.timestamp),
                status=history.status_record.status.value,
                status_runner_id=history.status_record.runner_id,
                status_timestamp=_aware(history.status_record.timestamp),
                runner_context_id=history.runner_context_id,
                registered_by_inv_id=history.registered_by_inv_id,
            )
            for invocation_id, history in entries
        ]
        if rows:
            self._bulk_insert_histories(rows)

    @retry_transient
    def _bulk_insert_histories(self, rows: list[Any]) -> None:
        from pynenc_django.models import InvocationHistory as HistoryRow

        # The unique key makes a retried or duplicated record a no-op instead of a copy.
        HistoryRow.objects.using(self.db_alias).bulk_create(
            rows, batch_size=INSERT_BATCH_SIZE, ignore_conflicts=True
        )

    @retry_transient
    def _get_history(self, invocation_id: InvocationId) -> list[InvocationHistory]:
        rows = (
            self._history()
            .filter(invocation_id=invocation_id)
            .order_by("timestamp", "id")
            .values_list(*_HISTORY_FIELDS)
        )
        return [_history_from_row(row) for row in rows]

    @retry_transient
    def _history_page(
        self,
        start_time: datetime,
        end_time: datetime,
        after: tuple[datetime, int] | None,
        fields: tuple[str, ...],
        limit: int,
    ) -> list[tuple[Any, ...]]:
        """Rows in ``[start, end]`` after the keyset ``after`` = (timestamp, id), oldest first."""
        queryset = self._history().filter(timestamp__gte=start_time, timestamp__lte=end_time)
        if after is not None:
            last_ts, last_id = after
            queryset = queryset.filter(timestamp__gte=last_ts).exclude(
                timestamp=last_ts, id__lte=last_id
            )
        return list(
            queryset.order_by("timestamp", "id").values_list("timestamp", "id", *fields)[:limit]
        )

    def _iter_history_rows(
        self, start_time: datetime, end_time: datetime, fields: tuple[str, ...], page_size: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Keyset pages over ``(app_id, timestamp, id)``: each page costs the same, unlike OFFSET."""
        start, end = _aware(start_time), _aware(end_time)
        after: tuple[datetime, int] | None = None
        while True:
            rows = self._history_page(start, end, after, fields, page_size)
            if rows:
                yield [row[2:] for row in rows]
            if len(rows) < page_size:
                return
            after = (rows[-1][0], rows[-1][1])

    def iter_history_in_timerange(
        self, start_time: datetime, end_time: datetime, batch_size: int = 100
    ) -> Iterator[list[InvocationHistory]]:
        """Histories with a timestamp in ``[start, end]``, in batches, oldest first."""
        page_size = max(1, batch_size)
        for rows in self._iter_history_rows(start_time, end_time, _HISTORY_FIELDS, page_size):
            yield [_history_from_row(row) for row in rows]

    def iter_invocations_in_timerange(
        self, start_time: datetime, end_time: datetime, batch_size: int = 100
    ) -> Iterator[list[InvocationId]]:
        """Distinct ids with history in ``[start, end]``, in order of first appearance.

        One pass over the time index; a DISTINCT ... ORDER BY id query per batch would
        rescan the whole range for every batch.
        """
        batch_size = max(1, batch_size)
        seen: set[str] = set()
        batch: list[InvocationId] = []
        page_size = max(batch_size, PAGE_SIZE)
        for rows in self._iter_history_rows(start_time, end_time, ("invocation_id",), page_size):
            for (invocation_id,) in rows:
                if invocation_id in seen:
                    continue
                seen.add(invocation_id)
                batch.append(InvocationId(invocation_id))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
