"""Registering and queueing new invocations: one statement on PostgreSQL, one transaction
elsewhere, and registration concurrency under its key's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc import context
from pynenc.invocation.status import (
    InvocationStatus,
    InvocationStatusRecord,
)
from pynenc.trigger.conditions import StatusContext

from pynenc_django.db import (
    named_locks,
    one_statement,
    pipelined,
    pipelines,
    retry_transient,
)
from pynenc_django.db.statements import Column, Same, insert_columns
from pynenc_django.orchestrator.core import OrchestratorCore
from pynenc_django.orchestrator.rules import (
    DISABLED,
    concurrency_lock_name,
    indexes_arguments,
)
from pynenc_django.serializer.calls import serialize_arguments_first
from pynenc_django.utils import sha256_hex
from pynenc_django.wakeup import current_result_waiter

#: A ``parallelize`` chunk of more calls than this is sent in pieces of this many,
#: pipelined (``RegistrationMixin._route_calls_pipelined``): 2,000 calls in 112 ms instead
#: of 148 on the development machine; 125 was no faster.
PIPELINE_CALLS = 250

if TYPE_CHECKING:
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.identifiers.task_id import TaskId
    from pynenc.invocation.dist_invocation import DistributedInvocation


class RegistrationMixin(OrchestratorCore):
    """Part of :class:`~pynenc_django.orchestrator.DjangoOrchestrator`; see the module docstring."""

    def route_call(self, call: Any) -> DistributedInvocation:
        """pynenc's routing of one call; the new invocation is stored by its registration
        (one transaction with its queueing, :meth:`_store_register_and_route`), not also
        as pynenc creates it."""
        from pynenc_django.state_backend import DjangoStateBackend

        serialize_arguments_first([call])  # an argument that cannot be stored: nothing stored
        backend = self.app.state_backend
        if call.task.conf.registration_concurrency != DISABLED:
            return self._route_call_exclusively(call)
        if not isinstance(backend, DjangoStateBackend):
            return super().route_call(call)
        with backend.registration_pending():
            return super().route_call(call)

    @retry_transient
    def _route_call_exclusively(self, call: Any) -> DistributedInvocation:
        """pynenc's routing under registration concurrency control ("reuse the REGISTERED
        invocation of this key, else register one") with the key's lock held from the
        look to the commit of the new invocation: two callers racing with the same key
        get one invocation, not one each."""
        name = concurrency_lock_name("registered", call, call.task.conf.registration_concurrency)
        with named_locks(self.db_alias, self.app.app_id) as lock, self.write_transaction():
            lock(name)
            return super().route_call(call)  # may reuse (and update) a stored invocation

    def route_calls(self, calls: list[Any]) -> list[DistributedInvocation]:
        """pynenc's batch routing (``task.parallelize``), storing the new invocations in
        one statement rather than one each as pynenc creates them."""
        from pynenc_django.state_backend import DjangoStateBackend

        serialize_arguments_first(calls)  # an argument that cannot be stored: nothing stored
        backend = self.app.state_backend
        if not isinstance(backend, DjangoStateBackend):
            return super().route_calls(calls)
        if (
            len(calls) > PIPELINE_CALLS
            and self.prepares  # off behind a transaction-mode pooler: not pipelined there
            and pipelines(self.db_alias)
            and self.history_by_database
            and self._routes_here
            and calls[0].task.conf.registration_concurrency == DISABLED
        ):
            return self._route_calls_pipelined(calls)
        with backend.registration_pending():
            return super().route_calls(calls)

    def _route_calls_pipelined(self, calls: list[Any]) -> list[DistributedInvocation]:
        """pynenc's batch routing, its invocations stored in pieces
        (:meth:`_store_pipelined`)."""
        from pynenc.invocation.dist_invocation import DistributedInvocation

        backend = self._django_state_backend
        parent = context.get_dist_invocation_context(self.app.app_id)
        with backend.registration_pending():
            invocations = [DistributedInvocation.from_parent(call, parent) for call in calls]
        runner_ctx = context.get_or_create_runner_context(self.app.app_id)
        backend.store_runner_context(runner_ctx)
        record = self._store_pipelined(invocations, runner_ctx.runner_id)
        self._registered(invocations, record.status)
        return invocations

    @retry_transient
    def _store_pipelined(
        self, invocations: list[DistributedInvocation], runner_id: str
    ) -> InvocationStatusRecord:
        """:meth:`_store_register_and_route` in pieces of :data:`PIPELINE_CALLS`, each one
        statement sent while the next piece is built (:func:`pipelined`: the client's CPU
        and the server's work overlap), all of them one transaction. A retry stores the
        same invocations: one whose first attempt committed unseen stays one."""
        with (
            self._forgotten_unless_stored(invocations),
            pipelined(self.db_alias) as pipelining,
            nullcontext() if pipelining else self.write_transaction(),
        ):
            for start in range(0, len(invocations), PIPELINE_CALLS):
                with one_statement(self.db_alias):
                    piece = invocations[start : start + PIPELINE_CALLS]
                    record = self._write_new(piece, runner_id)
        return record

    def register_new_invocations(self, invocations: list[DistributedInvocation]) -> None:
        """pynenc's registration; the REGISTERED history rows come from the database
        when it records them (:attr:`history_by_database`)."""
        end_pending = getattr(self.app.state_backend, "end_registration_pending", None)
        if end_pending is not None:
            end_pending()  # from here on the invocations are stored, all in one statement
        if not self.history_by_database:
            super().register_new_invocations(invocations)
            return
        runner_ctx = context.get_or_create_runner_context(self.app.app_id)
        self.app.state_backend.store_runner_context(runner_ctx)
        record = self._store_register_and_route(invocations, runner_ctx.runner_id)
        self._registered(invocations, record.status)

    def _registered(
        self, invocations: list[DistributedInvocation], status: InvocationStatus
    ) -> None:
        """What follows storing new invocations, whichever way they were stored."""
        self._expect_results(invocations)
        self._report_registered(invocations, status)
        self._log_registered(invocations)

    def _expect_results(self, invocations: list[DistributedInvocation]) -> None:
        """A process that waits for results keeps the announced results of what it
        submits (:meth:`~pynenc_django.wakeup.ResultWaiter.expect`): reading them later
        costs no query."""
        waiter = current_result_waiter(self.db_alias)
        if waiter is not None:
            waiter.expect(i.invocation_id for i in invocations)

    def _log_registered(self, invocations: list[DistributedInvocation]) -> None:
        if self.app.logger.isEnabledFor(logging.INFO):
            for invocation in invocations:
                self.app.logger.info(
                    f"NEW task:{invocation.call.task.task_id.key} "
                    f"invocation:{invocation.invocation_id} REGISTERED and ROUTED"
                )

    def _report_registered(
        self, invocations: list[DistributedInvocation], status: InvocationStatus
    ) -> None:
        """pynenc's report of the new status to the trigger, for the invocations of
        tasks a trigger condition watches: our trigger's report reads each invocation
        back only to find its task, and finds nothing to record for the others."""
        from pynenc_django.trigger import DjangoTrigger

        trigger = self.app.trigger
        if not isinstance(trigger, DjangoTrigger):
            trigger.report_tasks_status([i.invocation_id for i in invocations], status)
            return
        by_task: dict[TaskId, list[InvocationId]] = {}
        for invocation in invocations:
            by_task.setdefault(invocation.call.task.task_id, []).append(invocation.invocation_id)
        watched = [
            invocation_id
            for task_id, invocation_ids in by_task.items()
            if trigger.get_conditions_sourced_from_task(task_id, StatusContext)
            for invocation_id in invocation_ids
        ]
        if watched:
            trigger.report_tasks_status(watched, status)

    # ------------------------------------------------------------------ registration

    @retry_transient
    def _store_register_and_route(
        self, invocations: list[DistributedInvocation], runner_id: str
    ) -> InvocationStatusRecord:
        """Store, register and queue new invocations in one transaction (the state
        backend and the broker share this database where :attr:`history_by_database`):
        a caller that dies half-way leaves no REGISTERED invocation that nothing will
        ever run, and a single call costs one commit (one disk flush) instead of three.
        On PostgreSQL the INSERTs (arguments under concurrency control included) are one
        statement (:func:`one_statement`), atomic alone, for a single call and a batch
        alike: no transaction around it."""
        alone = self.dialect.writes_in_ctes
        with (
            self._forgotten_unless_stored(invocations),
            self.write_transaction() if self._routes_here and not alone else nullcontext(),
            one_statement(self.db_alias, self._routes_here),
        ):
            return self._write_new(invocations, runner_id)

    def _write_new(
        self, invocations: list[DistributedInvocation], runner_id: str
    ) -> InvocationStatusRecord:
        """The state rows, the REGISTERED rows and the queue messages of new invocations,
        in the caller's statement (:func:`one_statement`) or transaction."""
        self._django_state_backend.upsert_invocations(invocations)
        record = self._register_new_invocations(invocations, runner_id)
        self.route_invocations(invocations)
        return record

    @contextmanager
    def _forgotten_unless_stored(self, invocations: list[DistributedInvocation]) -> Iterator[None]:
        """On any failure inside, the writes were rolled back: the state backend must not
        believe the invocations stored (the next upsert writes them)."""
        try:
            yield
        except BaseException:
            self._django_state_backend.forget_invocations([i.invocation_id for i in invocations])
            raise

    @cached_property
    def _routes_here(self) -> bool:
        return self.shares_database(self.app.broker)

    @retry_transient
    def _register_new_invocations(
        self, invocations: list[DistributedInvocation], runner_id: str | None = None
    ) -> InvocationStatusRecord:
        """Insert REGISTERED rows for invocations not seen before (idempotent), built
        column by column (a batch's rows are many)."""
        from pynenc_django.models import Invocation

        # REGISTERED releases ownership, so no owner is stored whoever registers it.
        record = InvocationStatusRecord(InvocationStatus.REGISTERED, None)
        # Arguments under concurrency control are indexed before the invocation is queued
        # (pynenc indexes them after): a worker must never claim one whose key the next
        # claim's check could not see.
        guarded_tasks = {t for t in {i.call.task for i in invocations} if indexes_arguments(t)}
        guarded = [i for i in invocations if i.call.task in guarded_tasks]
        self._local.indexed = {i.invocation_id for i in guarded}
        self._index_arguments_of(guarded)
        calls = [invocation.call for invocation in invocations]
        columns: dict[str, Column] = {
            "app_id": Same(self.app.app_id),
            "invocation_id": [invocation.invocation_id for invocation in invocations],
            "task_id_key": [call.task.task_id.key for call in calls],
            "call_id_key": [call.call_id.key for call in calls],
            "status": Same(record.status.value),
            "status_runner_id": Same(None),
            "status_timestamp": Same(record.timestamp),
            "registered_at": Same(record.timestamp),
            "status_context_id": Same(runner_id),
            "registered_by_inv_id": [i.parent_invocation_id for i in invocations],
        }
        insert_columns(
            self.db_alias,
            Invocation,
            columns,
            len(invocations),
            unique_fields=["app_id", "invocation_id"],
            prepare=self.prepares,
        )
        return record

    def index_arguments_for_concurrency_control(self, invocation: DistributedInvocation) -> None:
        """pynenc calls this after registering and queueing; already done by then
        (:meth:`_register_new_invocations`), unless registered elsewhere."""
        if invocation.invocation_id in getattr(self._local, "indexed", ()):
            return
        self._index_arguments(invocation)

    def _index_arguments_of(self, invocations: list[DistributedInvocation]) -> None:
        """Index the arguments of new invocations in one INSERT (gathered into the
        submit's one statement on PostgreSQL), not one per invocation."""
        from pynenc_django.models import InvocationArgument

        invocation_ids: list[str] = []
        keys: list[str] = []
        values: list[str] = []
        for invocation in invocations:
            for key, value in invocation.call.serialized_arguments.items():
                invocation_ids.append(invocation.invocation_id)
                keys.append(key)
                values.append(value)
        insert_columns(
            self.db_alias,
            InvocationArgument,
            {
                "app_id": Same(self.app.app_id),
                "invocation_id": invocation_ids,
                "arg_key": keys,
                "value_hash": [sha256_hex(value) for value in values],
                "arg_value": values,
            },
            len(keys),
            unique_fields=["app_id", "invocation_id", "arg_key"],
            prepare=self.prepares,
        )

    @retry_transient
    def _index_arguments(self, invocation: DistributedInvocation) -> None:
        from pynenc_django.models import InvocationArgument

        rows = [
            InvocationArgument(
                app_id=self.app.app_id,
                invocation_id=invocation.invocation_id,
                arg_key=key,
                value_hash=sha256_hex(value),
                arg_value=value,
            )
            for key, value in invocation.call.serialized_arguments.items()
        ]
        if rows:
            InvocationArgument.objects.using(self.db_alias).bulk_create(rows, ignore_conflicts=True)
