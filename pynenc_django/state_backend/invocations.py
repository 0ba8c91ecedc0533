"""Invocation rows: the bulk upsert of new invocations (deferred while a batch is
routed), the per-process cache in front of the hottest read, and the listings by parent,
event and workflow.

An invocation's stored fields never change after registration, so what this process
wrote or read is served from its cache; ``INVOCATION_FIELDS`` is also the column list of
the orchestrator's and broker's queries that return an invocation's row with their own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.identifiers.call_id import CallId
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.models.call_dto import CallDTO
from pynenc.models.invocation_dto import InvocationDTO
from pynenc.types import Params, Result

from pynenc_django.calling.options import CallOptions, current_call_options
from pynenc_django.db import retry_transient
from pynenc_django.db.statements import Column, Same, insert_columns
from pynenc_django.state_backend.core import StateBackendCore
from pynenc_django.state_backend.workflows import _workflow_identity

if TYPE_CHECKING:
    from pynenc.invocation.dist_invocation import DistributedInvocation

INVOCATION_FIELDS = (
    "invocation_id",
    "call_id_key",
    "serialized_arguments",
    "parent_invocation_id",
    "parent_event_id",
    "workflow_id",
    "workflow_type_key",
    "parent_workflow_id",
    "call_options",
)


def dtos_from_row(row: Sequence[Any]) -> tuple[InvocationDTO, CallDTO]:
    """The DTOs of a state-invocation row, columns in ``INVOCATION_FIELDS`` order (its
    call options are :func:`options_from_row`'s)."""
    (
        inv_id,
        call_id_key,
        serialized_arguments,
        parent_inv_id,
        parent_event_id,
        wf_id,
        wf_type_key,
        wf_parent_id,
        _call_options,
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


def options_from_row(row: Sequence[Any]) -> CallOptions | None:
    """What the invocation's call asked for (queue, priority, expiry), if anything."""
    return CallOptions.from_stored(row[len(INVOCATION_FIELDS) - 1])


class InvocationsMixin(StateBackendCore[Params, Result]):
    """Part of :class:`~pynenc_django.state_backend.DjangoStateBackend`; see the module
    docstring."""

    def _invocations(self) -> Any:
        from pynenc_django.models import StateInvocation

        return StateInvocation.objects.using(self.db_alias).for_app(self.app.app_id)

    @contextlib.contextmanager
    def registration_pending(self) -> Iterator[None]:
        """Skip the store pynenc does as it creates each invocation of a batch: the
        registration that follows stores them all in one statement instead of one each."""
        self._local.pending = True
        try:
            yield
        finally:
            self._local.pending = False

    def upsert_invocations(self, invocations: list[DistributedInvocation]) -> None:
        """pynenc's (each invocation's DTOs, then :meth:`_upsert_invocations`), skipped
        outright while :meth:`registration_pending`: pynenc calls it as it creates each
        invocation of a batch, and building DTOs nobody stores was a fifth of a batch's
        CPU."""
        if getattr(self._local, "pending", False):
            return
        super().upsert_invocations(invocations)

    def end_registration_pending(self) -> None:
        self._local.pending = False

    def forget_invocations(self, invocation_ids: Sequence[str]) -> None:
        """Drop cached invocations whose store was rolled back, so the next upsert writes."""
        for invocation_id in invocation_ids:
            self.store.invocations.pop(invocation_id)

    def upsert_invocation_dtos(self, entries: list[tuple[InvocationDTO, CallDTO]]) -> None:
        """Store ``(InvocationDTO, CallDTO)`` pairs in one bulk upsert, skipping those this
        process already stored as they are, and all of them while
        :meth:`registration_pending`.

        pynenc's ``upsert_invocations`` builds the pairs from invocations; the admin's
        rerun builds them from stored rows."""
        if getattr(self._local, "pending", False):
            return  # see registration_pending
        changed = [
            (inv_dto, call_dto)
            for inv_dto, call_dto in entries
            if self.store.invocations.get(inv_dto.invocation_id) != (inv_dto, call_dto)
        ]
        if not changed:
            return
        self._write_invocations(changed)
        for inv_dto, call_dto in changed:
            self.store.invocations.put(inv_dto.invocation_id, (inv_dto, call_dto))

    def _upsert_invocations(self, entries: list[tuple[InvocationDTO, CallDTO]]) -> None:
        """pynenc's hook behind ``upsert_invocations``: :meth:`upsert_invocation_dtos`."""
        self.upsert_invocation_dtos(entries)

    @retry_transient
    def _write_invocations(self, entries: list[tuple[InvocationDTO, CallDTO]]) -> None:
        """One upsert of their rows, built column by column (a batch's rows are many);
        ``registered_at`` is kept from the first insert."""
        from pynenc_django.models import StateInvocation

        # A new invocation of apply_async's call keeps what the call asked for; a re-upsert
        # never changes it (not in update_fields).
        options = current_call_options()
        # A statement may not touch a row twice (PostgreSQL), and a fixed order keeps
        # concurrent batches from deadlocking on each other's row locks.
        by_id = {inv_dto.invocation_id: (inv_dto, call_dto) for inv_dto, call_dto in entries}
        ids = sorted(by_id)
        pairs = [by_id[invocation_id] for invocation_id in ids]
        if options is not None:
            for invocation_id in ids:
                self.store.options.put(invocation_id, options.without_due())
        call_ids = [call_dto.call_id for _, call_dto in pairs]
        workflows = [inv_dto.workflow for inv_dto, _ in pairs]
        columns: dict[str, Column] = {
            "app_id": Same(self.app.app_id),
            "invocation_id": ids,
            "call_id_key": [call_id.key for call_id in call_ids],
            "task_id_key": [call_id.task_id.key for call_id in call_ids],
            "arguments_id": [call_id.args_id for call_id in call_ids],
            "serialized_arguments": [
                json.dumps(dict(call_dto.serialized_arguments or {})) for _, call_dto in pairs
            ],
            "parent_invocation_id": [inv_dto.parent_invocation_id for inv_dto, _ in pairs],
            "parent_event_id": [inv_dto.parent_event_id for inv_dto, _ in pairs],
            "workflow_id": [w.workflow_id if w else None for w in workflows],
            "workflow_type_key": [w.workflow_type.key if w else None for w in workflows],
            "parent_workflow_id": [w.parent_workflow_id if w else None for w in workflows],
            "registered_at": Same(datetime.now(UTC)),
            "call_options": Same(options.stored() if options is not None else None),
        }
        insert_columns(
            self.db_alias,
            StateInvocation,
            columns,
            len(ids),
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
            prepare=self.prepares,
        )

    def _get_invocation(self, invocation_id: InvocationId) -> tuple[InvocationDTO, CallDTO] | None:
        """The hottest read (several per invocation): from this process's cache if it
        stored or read the invocation before, else one indexed single-row query."""
        cached = self.store.invocations.get(invocation_id)
        if cached is not None:
            return cached
        found = self._read_invocation(invocation_id)
        if found is not None:
            self.store.invocations.put(invocation_id, found)
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
        if not rows:
            return None
        self.store.remember_options(invocation_id, options_from_row(rows[0]))
        return dtos_from_row(rows[0])

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
