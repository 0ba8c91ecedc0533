"""State backend on the Django ORM: invocations, status history, results and workflow state.

pynenc imports this module in every process, Django or not, so models are imported
inside methods and Django is only set up when the backend is built.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.app_info import AppInfo
from pynenc.identifiers.call_id import CallId
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.identifiers.task_id import TaskId
from pynenc.invocation.status import InvocationStatus, InvocationStatusRecord
from pynenc.models.call_dto import CallDTO
from pynenc.models.invocation_dto import InvocationDTO
from pynenc.runner.runner_context import RunnerContext
from pynenc.state_backend.base_state_backend import BaseStateBackend, InvocationHistory
from pynenc.types import Params, Result
from pynenc.workflow.workflow_identity import WorkflowIdentity

from pynenc_django.conf import ConfigStateBackendDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django, retry_transient
from pynenc_django.utils import BoundedCache, chunked

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.invocation.dist_invocation import DistributedInvocation

logger = logging.getLogger("pynenc_django")

# Rows per query when streaming unbounded listings: bounded memory, no cursor held open
# while the caller works, and each page is retried on its own.
PAGE_SIZE = 1000
# Rows per INSERT statement: keeps statements well inside SQLite's variable limit and
# MariaDB's max_allowed_packet when arguments are large.
INSERT_BATCH_SIZE = 500
# Invocations this process wrote or read. Their stored fields never change after
# registration, so the cache needs no invalidation beyond purge.
INVOCATION_CACHE_SIZE = 10_000
# Results fetched with their SUCCESS status, awaiting their read; only results up to
# PREFETCH_RESULT_BYTES are fetched that way, so this holds at most about 32 MB.
FETCHED_RESULTS_SIZE = 2_000
PREFETCH_RESULT_BYTES = 16_384

_HISTORY_FIELDS = (
    "invocation_id",
    "timestamp",
    "status",
    "status_runner_id",
    "status_timestamp",
    "runner_context_id",
    "registered_by_inv_id",
)
INVOCATION_FIELDS = (
    "invocation_id",
    "call_id_key",
    "serialized_arguments",
    "parent_invocation_id",
    "parent_event_id",
    "workflow_id",
    "workflow_type_key",
    "parent_workflow_id",
)
_RUNNER_CONTEXT_FIELDS = (
    "runner_id",
    "runner_cls",
    "parent_runner_id",
    "pid",
    "hostname",
    "thread_id",
)


def _aware(value: datetime) -> datetime:
    """Naive datetimes are UTC, as in ``InvocationHistory.from_json``."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _context_chain(runner_context: RunnerContext) -> list[RunnerContext]:
    """The context followed by its ancestors, stopping at a repeated id."""
    chain: list[RunnerContext] = []
    seen: set[str] = set()
    ctx: RunnerContext | None = runner_context
    while ctx is not None and ctx.runner_id not in seen:
        seen.add(ctx.runner_id)
        chain.append(ctx)
        ctx = ctx.parent_ctx
    return chain


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


def _workflow_identity(
    workflow_id: str, workflow_type_key: str, parent_workflow_id: str | None
) -> WorkflowIdentity:
    return WorkflowIdentity(
        workflow_id=InvocationId(workflow_id),
        workflow_type=TaskId.from_key(workflow_type_key),
        parent_workflow_id=InvocationId(parent_workflow_id) if parent_workflow_id else None,
    )


def _dtos_from_row(row: Sequence[Any]) -> tuple[InvocationDTO, CallDTO]:
    """The DTOs of a state-invocation row, columns in ``INVOCATION_FIELDS`` order."""
    (
        inv_id,
        call_id_key,
        serialized_arguments,
        parent_inv_id,
        parent_event_id,
        wf_id,
        wf_type_key,
        wf_parent_id,
    ) = row
    call_id = CallId.from_key(call_id_key)
    workflow = (
        _workflow_identity(wf_id, wf_type_key, wf_parent_id) if wf_id and wf_type_key else None
    )
    inv_dto = InvocationDTO(
        invocation_id=InvocationId(inv_id),
        call_id=call_id,
        workflow=workflow,
        parent_invocation_id=InvocationId(parent_inv_id) if parent_inv_id else None,
        parent_event_id=parent_event_id or None,
    )
    return inv_dto, CallDTO(call_id=call_id, serialized_arguments=json.loads(serialized_arguments))


class DjangoStateBackend(DjangoBackendMixin, BaseStateBackend[Params, Result]):
    """Everything pynenc keeps about invocations after routing them, in Django models.

    Writes are idempotent upserts keyed by ``(app_id, <id>)``, so retrying a call after a
    transient error or a lost connection never duplicates or corrupts a record.
    """

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)
        ensure_django()
        # pynenc stores each new invocation twice (on creation and on registration) and
        # reads it back on every status change (trigger reports, claims): one query each.
        self._invocation_cache: BoundedCache[str, tuple[InvocationDTO, CallDTO]] = BoundedCache(
            INVOCATION_CACHE_SIZE
        )
        self._local = threading.local()
        # Results read with their final status (see ``remember_result``), each until read.
        self._fetched_results: BoundedCache[str, str] = BoundedCache(FETCHED_RESULTS_SIZE)

    @cached_property
    def conf(self) -> ConfigStateBackendDjango:
        return ConfigStateBackendDjango(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )

    # ------------------------------------------------------------------ helpers

    def _iter_pages(self, queryset: Any, fields: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        """Stream ``fields`` of ``queryset`` in primary-key order, one short query per page."""
        last_pk: int | None = None
        while True:
            rows = self._fetch_page(queryset, fields, last_pk)
            for row in rows:
                yield row[1:]
            if len(rows) < PAGE_SIZE:
                return
            last_pk = rows[-1][0]

    @retry_transient
    def _fetch_page(
        self, queryset: Any, fields: tuple[str, ...], last_pk: int | None
    ) -> list[tuple[Any, ...]]:
        if last_pk is not None:
            queryset = queryset.filter(pk__gt=last_pk)
        return list(queryset.order_by("pk").values_list("pk", *fields)[:PAGE_SIZE])

    def _iter_ids(self, queryset: Any, field: str) -> Iterator[InvocationId]:
        for (value,) in self._iter_pages(queryset, (field,)):
            yield InvocationId(value)

    def _invocations(self) -> Any:
        from pynenc_django.models import StateInvocation

        return StateInvocation.objects.using(self.db_alias).for_app(self.app.app_id)

    def _history(self) -> Any:
        from pynenc_django.models import InvocationHistory as HistoryRow

        return HistoryRow.objects.using(self.db_alias).for_app(self.app.app_id)

    # ------------------------------------------------------------------ purge

    @retry_transient
    def purge(self) -> None:
        """Delete every row of this app, and forget which runner contexts were stored."""
        from pynenc_django import models as m

        with self.write_transaction():
            for model in (
                m.StateInvocation,
                m.InvocationHistory,
                m.InvocationResult,
                m.InvocationException,
                m.RunnerContextRecord,
                m.WorkflowRun,
                m.WorkflowData,
                m.WorkflowSubInvocation,
                m.AppInfoRecord,
            ):
                model.objects.using(self.db_alias).for_app(self.app.app_id).delete()
        # Otherwise this process would never re-store contexts it cached before the purge.
        self._runner_context_cache.clear()
        self._invocation_cache.clear()
        self._fetched_results.clear()

    # ------------------------------------------------------------------ invocations

    @contextlib.contextmanager
    def registration_pending(self) -> Iterator[None]:
        """Skip the store pynenc does as it creates each invocation of a batch: the
        registration that follows stores them all in one statement instead of one each."""
        self._local.pending = True
        try:
            yield
        finally:
            self._local.pending = False

    def end_registration_pending(self) -> None:
        self._local.pending = False

    def forget_invocations(self, invocation_ids: Sequence[str]) -> None:
        """Drop cached invocations whose store was rolled back, so the next upsert writes."""
        for invocation_id in invocation_ids:
            self._invocation_cache.pop(invocation_id)

    def _upsert_invocations(self, entries: list[tuple[InvocationDTO, CallDTO]]) -> None:
        """One bulk upsert of what this process has not already stored as it is."""
        if getattr(self._local, "pending", False):
            return  # see registration_pending
        changed = [
            (inv_dto, call_dto)
            for inv_dto, call_dto in entries
            if self._invocation_cache.get(inv_dto.invocation_id) != (inv_dto, call_dto)
        ]
        if not changed:
            return
        self._write_invocations(changed)
        for inv_dto, call_dto in changed:
            self._invocation_cache.put(inv_dto.invocation_id, (inv_dto, call_dto))

    @retry_transient
    def _write_invocations(self, entries: list[tuple[InvocationDTO, CallDTO]]) -> None:
        """``registered_at`` is kept from the first insert."""
        from pynenc_django.models import StateInvocation

        now = datetime.now(UTC)
        by_id: dict[str, StateInvocation] = {}
        for inv_dto, call_dto in entries:
            workflow = inv_dto.workflow
            by_id[inv_dto.invocation_id] = StateInvocation(
                app_id=self.app.app_id,
                invocation_id=inv_dto.invocation_id,
                call_id_key=call_dto.call_id.key,
                task_id_key=call_dto.call_id.task_id.key,
                arguments_id=call_dto.call_id.args_id,
                serialized_arguments=json.dumps(dict(call_dto.serialized_arguments or {})),
                parent_invocation_id=inv_dto.parent_invocation_id,
                parent_event_id=inv_dto.parent_event_id,
                workflow_id=workflow.workflow_id if workflow else None,
                workflow_type_key=workflow.workflow_type.key if workflow else None,
                parent_workflow_id=workflow.parent_workflow_id if workflow else None,
                registered_at=now,
            )
        # A statement may not touch a row twice (PostgreSQL), and a fixed order keeps
        # concurrent batches from deadlocking on each other's row locks.
        rows = [by_id[key] for key in sorted(by_id)]
        self._upsert(
            StateInvocation,
            rows,
            unique_fields=["app_id", "invocation_id"],
            update_fields=[
                "call_id_key",
                "task_id_key",
                "arguments_id",
                "serialized_arguments",
                "parent_invocation_id",
                "parent_event_id",
                "workflow_id",
                "workflow_type_key",
                "parent_workflow_id",
            ],
        )

    def _get_invocation(self, invocation_id: InvocationId) -> tuple[InvocationDTO, CallDTO] | None:
        """The hottest read (several per invocation): from this process's cache if it
        stored or read the invocation before, else one indexed single-row query."""
        cached = self._invocation_cache.get(invocation_id)
        if cached is not None:
            return cached
        found = self._read_invocation(invocation_id)
        if found is not None:
            self._invocation_cache.put(invocation_id, found)
        return found

    @cached_property
    def _invocation_sql(self) -> str:
        from pynenc_django.models import StateInvocation

        return (
            f"SELECT {', '.join(INVOCATION_FIELDS)} FROM {self._table(StateInvocation)} "
            "WHERE app_id = %s AND invocation_id = %s"
        )

    @retry_transient
    def _read_invocation(self, invocation_id: InvocationId) -> tuple[InvocationDTO, CallDTO] | None:
        rows = self._fetch(self._invocation_sql, [self.app.app_id, invocation_id])
        return _dtos_from_row(rows[0]) if rows else None

    def remember_invocation_row(self, row: Sequence[Any]) -> None:
        """Cache an invocation read by someone else's query (columns ``INVOCATION_FIELDS``):
        the broker's pop returns the popped invocation's row with it on PostgreSQL."""
        dtos = _dtos_from_row(row)
        self._invocation_cache.put(dtos[0].invocation_id, dtos)

    def get_child_invocations(self, parent_invocation_id: InvocationId) -> Iterator[InvocationId]:
        return self._iter_ids(
            self._invocations().filter(parent_invocation_id=parent_invocation_id), "invocation_id"
        )

    def get_invocations_by_parent_event(self, parent_event_id: str) -> Iterator[InvocationId]:
        return self._iter_ids(
            self._invocations().filter(parent_event_id=parent_event_id), "invocation_id"
        )

    def get_invocation_ids_by_workflow(
        self, workflow_id: str | None = None, workflow_type_key: str | None = None
    ) -> Iterator[InvocationId]:
        queryset = self._invocations()
        if workflow_id:
            queryset = queryset.filter(workflow_id=workflow_id)
        if workflow_type_key:
            queryset = queryset.filter(workflow_type_key=workflow_type_key)
        elif not workflow_id:
            # "By workflow": with no filter, every invocation that belongs to a workflow
            # (as MemStateBackend; SQLite's would also list plain tasks).
            queryset = queryset.filter(workflow_id__isnull=False)
        return self._iter_ids(queryset, "invocation_id")

    # ------------------------------------------------------------------ history

    def add_histories(
        self,
        invocations: list[DistributedInvocation[Params, Result]],
        status_record: InvocationStatusRecord,
        runner_context: RunnerContext,
    ) -> None:
        """Same records as the base class, written in one statement instead of one per invocation."""
        self.store_runner_context(runner_context)
        registering = status_record.status == InvocationStatus.REGISTERED
        self._insert_histories(
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
        self._insert_histories(
            (invocation_id, invocation_history) for invocation_id in invocation_ids
        )

    def _insert_histories(self, entries: Iterable[tuple[str, InvocationHistory]]) -> None:
        """Store one history row per ``(invocation_id, record)`` with a single INSERT."""
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

    # ------------------------------------------------------------------ results

    @retry_transient
    def _set_result(self, invocation_id: InvocationId, serialized_result: str) -> None:
        from pynenc_django.models import InvocationResult

        row = InvocationResult(
            app_id=self.app.app_id, invocation_id=invocation_id, result=serialized_result
        )
        self._upsert(InvocationResult, [row], ["app_id", "invocation_id"], ["result"])

    def remember_result(self, invocation_id: str, serialized_result: str) -> None:
        """Keep a result the orchestrator read together with its SUCCESS status, for the
        ``get_result`` that follows (a waiting client's next step): one query fewer per
        invocation. Kept until read once; a result is immutable once it is SUCCESS."""
        self._fetched_results.put(invocation_id, serialized_result)

    @retry_transient
    def _get_result(self, invocation_id: InvocationId) -> str:
        from pynenc_django.models import InvocationResult

        if (fetched := self._fetched_results.pop(invocation_id)) is not None:
            return fetched
        return self._get_text(InvocationResult, "result", invocation_id)

    @retry_transient
    def _set_exception(self, invocation_id: InvocationId, serialized_exception: str) -> None:
        from pynenc_django.models import InvocationException

        row = InvocationException(
            app_id=self.app.app_id, invocation_id=invocation_id, exception=serialized_exception
        )
        self._upsert(InvocationException, [row], ["app_id", "invocation_id"], ["exception"])

    @retry_transient
    def _get_exception(self, invocation_id: InvocationId) -> str:
        from pynenc_django.models import InvocationException

        return self._get_text(InvocationException, "exception", invocation_id)

    def _get_text(self, model: type[Any], field: str, invocation_id: InvocationId) -> str:
        """The stored result or exception of an invocation; KeyError if there is none."""
        column = self.connection.ops.quote_name(field)
        sql = f"SELECT {column} FROM {self._table(model)} WHERE app_id = %s AND invocation_id = %s"
        rows = self._fetch(sql, [self.app.app_id, invocation_id])
        if not rows:
            raise KeyError(f"{field.capitalize()} for invocation {invocation_id} not found")
        return rows[0][0]

    # ------------------------------------------------------------------ workflows

    def set_workflow_data(self, workflow_identity: WorkflowIdentity, key: str, value: Any) -> None:
        # Serialize first: large values go to the client data store, outside our write.
        self._set_workflow_data(
            workflow_identity.workflow_id, key, self.app.client_data_store.serialize(value)
        )

    @retry_transient
    def _set_workflow_data(self, workflow_id: str, key: str, serialized: str) -> None:
        from pynenc_django.models import WorkflowData

        row = WorkflowData(
            app_id=self.app.app_id, workflow_id=workflow_id, data_key=key, data_value=serialized
        )
        self._upsert(WorkflowData, [row], ["app_id", "workflow_id", "data_key"], ["data_value"])

    def get_workflow_data(
        self, workflow_identity: WorkflowIdentity, key: str, default: Any = None
    ) -> Any:
        serialized = self._get_workflow_data(workflow_identity.workflow_id, key)
        if serialized is None:
            return default
        return self.app.client_data_store.deserialize(serialized)

    @retry_transient
    def _get_workflow_data(self, workflow_id: str, key: str) -> str | None:
        from pynenc_django.models import WorkflowData

        values = list(
            WorkflowData.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(workflow_id=workflow_id, data_key=key)
            .values_list("data_value", flat=True)
        )
        return values[0] if values else None

    @retry_transient
    def store_workflow_run(self, workflow_identity: WorkflowIdentity) -> None:
        from pynenc_django.models import WorkflowRun

        row = WorkflowRun(
            app_id=self.app.app_id,
            workflow_id=workflow_identity.workflow_id,
            workflow_type_key=workflow_identity.workflow_type.key,
            parent_workflow_id=workflow_identity.parent_workflow_id or None,
        )
        self._upsert(
            WorkflowRun,
            [row],
            ["app_id", "workflow_id"],
            ["workflow_type_key", "parent_workflow_id"],
        )

    def _workflow_runs(self) -> Any:
        from pynenc_django.models import WorkflowRun

        return WorkflowRun.objects.using(self.db_alias).for_app(self.app.app_id)

    @retry_transient
    def _workflow_type_keys(self) -> list[str]:
        return list(
            self._workflow_runs()
            .order_by("workflow_type_key")
            .values_list("workflow_type_key", flat=True)
            .distinct()
        )

    def get_all_workflow_types(self) -> Iterator[TaskId]:
        return (TaskId.from_key(key) for key in self._workflow_type_keys())

    def _iter_workflow_runs(self, queryset: Any) -> Iterator[WorkflowIdentity]:
        fields = ("workflow_id", "workflow_type_key", "parent_workflow_id")
        for wf_id, wf_type_key, parent_id in self._iter_pages(queryset, fields):
            yield _workflow_identity(wf_id, wf_type_key, parent_id)

    def get_all_workflow_runs(self) -> Iterator[WorkflowIdentity]:
        return self._iter_workflow_runs(self._workflow_runs())

    def get_workflow_runs(self, workflow_type: TaskId) -> Iterator[WorkflowIdentity]:
        return self._iter_workflow_runs(
            self._workflow_runs().filter(workflow_type_key=workflow_type.key)
        )

    @retry_transient
    def store_workflow_sub_invocation(
        self, parent_workflow_id: InvocationId, sub_invocation_id: InvocationId
    ) -> None:
        from pynenc_django.models import WorkflowSubInvocation

        WorkflowSubInvocation.objects.using(self.db_alias).bulk_create(
            [
                WorkflowSubInvocation(
                    app_id=self.app.app_id,
                    parent_workflow_id=parent_workflow_id,
                    sub_invocation_id=sub_invocation_id,
                )
            ],
            ignore_conflicts=True,
        )

    def get_workflow_sub_invocations(self, workflow_id: InvocationId) -> Iterator[InvocationId]:
        from pynenc_django.models import WorkflowSubInvocation

        queryset = (
            WorkflowSubInvocation.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(parent_workflow_id=workflow_id)
        )
        return self._iter_ids(queryset, "sub_invocation_id")

    # ------------------------------------------------------------------ app info

    @retry_transient
    def store_app_info(self, app_info: AppInfo) -> None:
        from pynenc_django.models import AppInfoRecord

        row = AppInfoRecord(
            app_id=app_info.app_id, app_info_json=app_info.to_json(), updated_at=datetime.now(UTC)
        )
        self._upsert(AppInfoRecord, [row], ["app_id"], ["app_info_json", "updated_at"])

    @retry_transient
    def get_app_info(self) -> AppInfo:
        from pynenc_django.models import AppInfoRecord

        values = list(
            AppInfoRecord.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .values_list("app_info_json", flat=True)
        )
        if not values:
            raise KeyError(f"App info for {self.app.app_id} not found")
        return AppInfo.from_json(values[0])

    @staticmethod
    def discover_app_infos() -> dict[str, AppInfo]:
        """Every app that stored its info in the configured database, whatever its app_id.

        There is no app here, so the alias comes from the default config sources
        (``PYNENC__DJANGO_DB_ALIAS``, config files), else ``"default"``.
        """
        ensure_django()
        return _AppInfoDiscovery(ConfigStateBackendDjango()).read()

    # ------------------------------------------------------------------ runner contexts

    def store_runner_context(self, runner_context: RunnerContext) -> None:
        """Store a context and its ancestors in one statement, once per process.

        The whole chain is written whenever the context is new, so a stored child
        always has its parents, even if another process purged them meanwhile.
        """
        chain = _context_chain(runner_context)
        if any(ctx.runner_id not in self._runner_context_cache for ctx in chain):
            self._store_runner_contexts(chain)
        for ctx in chain:
            self._runner_context_cache[ctx.runner_id] = ctx

    def _store_runner_context(self, runner_context: RunnerContext) -> None:
        self._store_runner_contexts(_context_chain(runner_context))

    @retry_transient
    def _store_runner_contexts(self, contexts: list[RunnerContext]) -> None:
        from pynenc_django.models import RunnerContextRecord

        by_id = {
            ctx.runner_id: RunnerContextRecord(
                app_id=self.app.app_id,
                runner_id=ctx.runner_id,
                runner_cls=ctx.runner_cls,
                parent_runner_id=ctx.parent_ctx.runner_id if ctx.parent_ctx else None,
                pid=ctx.pid,
                hostname=ctx.hostname,
                thread_id=ctx.thread_id,
            )
            for ctx in contexts
        }
        self._upsert(
            RunnerContextRecord,
            [by_id[key] for key in sorted(by_id)],
            ["app_id", "runner_id"],
            ["runner_cls", "parent_runner_id", "pid", "hostname", "thread_id"],
        )

    def _runner_contexts(self) -> Any:
        from pynenc_django.models import RunnerContextRecord

        return RunnerContextRecord.objects.using(self.db_alias).for_app(self.app.app_id)

    def _build_runner_contexts(self, rows: list[tuple[Any, ...]]) -> list[RunnerContext]:
        """Rebuild contexts with their parents, loading missing ancestors a level at a time."""
        rows_by_id: dict[str, tuple[Any, ...]] = {row[0]: row for row in rows}
        missing = {
            row[2] for row in rows if row[2] and row[2] not in rows_by_id
        } - self._runner_context_cache.keys()
        while missing:
            fetched: list[tuple[Any, ...]] = []
            for chunk in chunked(sorted(missing)):
                fetched.extend(
                    self._runner_contexts()
                    .filter(runner_id__in=chunk)
                    .values_list(*_RUNNER_CONTEXT_FIELDS)
                )
            rows_by_id.update((row[0], row) for row in fetched)
            missing = {
                row[2] for row in fetched if row[2] and row[2] not in rows_by_id
            } - self._runner_context_cache.keys()

        built: dict[str, RunnerContext] = {}

        def build(runner_id: str, visiting: frozenset[str]) -> RunnerContext | None:
            if runner_id in built:
                return built[runner_id]
            if runner_id in self._runner_context_cache and runner_id not in rows_by_id:
                return self._runner_context_cache[runner_id]
            row = rows_by_id.get(runner_id)
            if row is None or runner_id in visiting:
                return None
            _, runner_cls, parent_id, pid, hostname, thread_id = row
            parent = build(parent_id, visiting | {runner_id}) if parent_id else None
            if parent_id and parent is None:
                logger.warning(
                    "pynenc_django: runner context %s has no stored parent %s", runner_id, parent_id
                )
            ctx = RunnerContext(
                runner_cls=runner_cls,
                runner_id=runner_id,
                parent_ctx=parent,
                pid=pid,
                hostname=hostname,
                thread_id=thread_id,
            )
            built[runner_id] = ctx
            return ctx

        contexts = [ctx for row in rows if (ctx := build(row[0], frozenset())) is not None]
        for ctx in built.values():
            self._runner_context_cache.setdefault(ctx.runner_id, ctx)
        return contexts

    @retry_transient
    def _get_runner_contexts(self, runner_ids: list[str]) -> list[RunnerContext]:
        ids = list(dict.fromkeys(runner_ids))
        rows_by_id: dict[str, tuple[Any, ...]] = {}
        for chunk in chunked(ids):
            rows_by_id.update(
                (row[0], row)
                for row in self._runner_contexts()
                .filter(runner_id__in=chunk)
                .values_list(*_RUNNER_CONTEXT_FIELDS)
            )
        return self._build_runner_contexts([rows_by_id[i] for i in ids if i in rows_by_id])

    def _get_runner_context(self, runner_id: str) -> RunnerContext | None:
        contexts = self._get_runner_contexts([runner_id])
        return contexts[0] if contexts else None

    @retry_transient
    def _matching_runner_contexts(self, partial_id: str) -> list[RunnerContext]:
        rows = list(
            self._runner_contexts()
            .filter(runner_id__contains=partial_id)
            .order_by("runner_id")
            .values_list(*_RUNNER_CONTEXT_FIELDS)
        )
        return self._build_runner_contexts(rows)

    def get_matching_runner_contexts(self, partial_id: str) -> Iterator[RunnerContext]:
        return iter(self._matching_runner_contexts(partial_id))


class _AppInfoDiscovery(DjangoBackendMixin):
    """A backend-shaped holder so the app-less discovery query gets the same retries."""

    def __init__(self, conf: ConfigStateBackendDjango) -> None:
        self.conf = conf

    @retry_transient
    def read(self) -> dict[str, AppInfo]:
        from pynenc_django.models import AppInfoRecord

        rows = AppInfoRecord.objects.using(self.db_alias).order_by("app_id")
        return {
            app_id: AppInfo.from_json(app_info_json)
            for app_id, app_info_json in rows.values_list("app_id", "app_info_json")
        }
