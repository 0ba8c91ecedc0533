"""Registering and queueing new invocations: one statement on PostgreSQL, one transaction
elsewhere, and registration concurrency under its key's lock.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc import context
from pynenc.invocation.status import (
    InvocationStatus,
    InvocationStatusRecord,
)

from pynenc_django.db import (
    insert_rows,
    named_locks,
    one_statement,
    retry_transient,
)
from pynenc_django.orchestrator.core import OrchestratorCore
from pynenc_django.orchestrator.rules import (
    DISABLED,
    concurrency_lock_name,
    indexes_arguments,
)
from pynenc_django.serializer.calls import serialize_arguments_first
from pynenc_django.utils import sha256_hex

if TYPE_CHECKING:
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
        with backend.registration_pending():
            return super().route_calls(calls)

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
        invocation_ids = [invocation.invocation_id for invocation in invocations]
        self.app.trigger.report_tasks_status(invocation_ids, record.status)
        for invocation in invocations:
            self.app.logger.info(
                f"NEW task:{invocation.call.task.task_id.key} "
                f"invocation:{invocation.invocation_id} REGISTERED and ROUTED"
            )

    # ------------------------------------------------------------------ registration

    @retry_transient
    def _store_register_and_route(
        self, invocations: list[DistributedInvocation], runner_id: str
    ) -> InvocationStatusRecord:
        """Store, register and queue new invocations in one transaction (the state
        backend and the broker share this database where :attr:`history_by_database`):
        a caller that dies half-way leaves no REGISTERED invocation that nothing will
        ever run, and a single call costs one commit (one disk flush) instead of three.
        On PostgreSQL the three INSERTs are one statement (:func:`one_statement`), which
        for a single invocation needs no transaction around it."""
        backend = self._django_state_backend
        # One invocation on PostgreSQL: its three INSERTs are one statement, atomic alone.
        alone = (
            len(invocations) == 1
            and self.dialect.writes_in_ctes
            and not indexes_arguments(invocations[0].task)  # its arguments: one more INSERT
        )
        try:
            with (
                self.write_transaction() if self._routes_here and not alone else nullcontext(),
                one_statement(self.db_alias, self._routes_here),
            ):
                backend.upsert_invocations(invocations)
                record = self._register_new_invocations(invocations, runner_id)
                self.route_invocations(invocations)
        except BaseException:
            # Rolled back: the state backend must not believe them stored.
            backend.forget_invocations([i.invocation_id for i in invocations])
            raise
        return record

    @cached_property
    def _routes_here(self) -> bool:
        return self.shares_database(self.app.broker)

    @retry_transient
    def _register_new_invocations(
        self, invocations: list[DistributedInvocation], runner_id: str | None = None
    ) -> InvocationStatusRecord:
        """Insert REGISTERED rows for invocations not seen before (idempotent)."""
        from pynenc_django.models import Invocation

        # REGISTERED releases ownership, so no owner is stored whoever registers it.
        record = InvocationStatusRecord(InvocationStatus.REGISTERED, None)
        # Arguments under concurrency control are indexed before the invocation is queued
        # (pynenc indexes them after): a worker must never claim one whose key the next
        # claim's check could not see.
        guarded = [i for i in invocations if indexes_arguments(i.task)]
        self._local.indexed = {i.invocation_id for i in guarded}
        for invocation in guarded:
            self._index_arguments(invocation)
        insert_rows(
            self.db_alias,
            Invocation,
            [
                Invocation(
                    app_id=self.app.app_id,
                    invocation_id=invocation.invocation_id,
                    task_id_key=invocation.task.task_id.key,
                    call_id_key=invocation.call.call_id.key,
                    status=record.status.value,
                    status_runner_id=None,
                    status_timestamp=record.timestamp,
                    registered_at=record.timestamp,
                    status_context_id=runner_id,
                    registered_by_inv_id=invocation.parent_invocation_id,
                )
                for invocation in invocations
            ],
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
