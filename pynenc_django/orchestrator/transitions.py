"""Status changes: one conditional UPDATE whose WHERE clause is pynenc's state machine, its
history (written by the database where it can), results stored with their SUCCESS, and
what pynenc must not record as a task failure.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import (
    InvocationStatus,
    InvocationStatusRecord,
    status_record_transition,
)

from pynenc_django.db import (
    retry_transient,
)
from pynenc_django.exceptions import InvocationNotStoredError, NotSerializableError
from pynenc_django.orchestrator.core import OrchestratorCore
from pynenc_django.orchestrator.rules import (
    _SUCCESS_PLAN,
    STORAGE_ERROR,
    _transition_plan,
    storage_write,
)
from pynenc_django.serializer.calls import result_not_storable, serialize_result
from pynenc_django.utils import now_utc
from pynenc_django.wakeup import (
    FINAL_SIGNAL,
    signal_after_commit,
    signal_path,
)

if TYPE_CHECKING:
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.runner.runner_context import RunnerContext


#: The triggers migration 0004 installs on MariaDB/MySQL where the server allows them.
class TransitionsMixin(OrchestratorCore):
    """Part of :class:`~pynenc_django.orchestrator.DjangoOrchestrator`; see the module docstring."""

    @cached_property
    def history_by_database(self) -> bool:
        """Whether the database itself records each status change in the state history
        and releases waiters on final statuses (triggers of migration 0003, PostgreSQL
        and SQLite; of 0004 on MariaDB/MySQL where the server allowed them), so neither
        costs a statement of its own."""
        if not self.shares_database(self.app.state_backend):
            return False
        return self._records_history()

    @retry_transient  # also moves the query off an event loop (async tasks), as Django wants
    def _records_history(self) -> bool:
        return self.dialect.records_history(self.db_alias)

    # ------------------------------------------------------------------ status

    @storage_write
    def set_invocation_status(
        self, invocation_id: InvocationId, status: InvocationStatus, runner_ctx: RunnerContext
    ) -> None:
        """pynenc's steps (:meth:`record_status_change`, then the trigger report). RUNNING
        by the runner that claimed straight into it (``ClaimOptions.run_at_once``) is
        already written."""
        claimed_by = self._running_claims.pop(invocation_id, None) if self._running_claims else None
        if status != InvocationStatus.RUNNING or claimed_by != runner_ctx.runner_id:
            self.record_status_change(invocation_id, status, runner_ctx)
        self._report_status(invocation_id, status)

    def _report_status(self, invocation_id: InvocationId, status: InvocationStatus) -> None:
        """What pynenc does after writing a status: the trigger report, the log line."""
        self.app.trigger.report_tasks_status([invocation_id], status)
        self.app.logger.info(f"invocation:{invocation_id} status:{status.value}")

    @storage_write
    def set_invocation_result(
        self, invocation: DistributedInvocation, result: Any, runner_ctx: RunnerContext
    ) -> None:
        """pynenc's (store the result, then SUCCESS, then the trigger reports), except that
        the result is stored only with the SUCCESS: by one statement on PostgreSQL, in one
        transaction elsewhere. pynenc stores it first, so a late run of an invocation that
        was recovered and run again elsewhere overwrote the result of the run that
        counted, although its SUCCESS was refused."""
        if not self.shares_database(self.app.state_backend):
            try:
                super().set_invocation_result(invocation, result, runner_ctx)
            except NotSerializableError as exc:
                raise result_not_storable(invocation, result, exc) from exc
            return
        invocation_id = invocation.invocation_id
        serialized = serialize_result(self.app, invocation, result)  # or FAILED, with why
        if self.history_by_database and self.dialect.writes_in_ctes:
            self.record_status_change(
                invocation_id, InvocationStatus.SUCCESS, runner_ctx, serialized
            )
        else:
            self._store_result_if_owner(invocation_id, serialized, runner_ctx.runner_id)
            self.record_status_change(invocation_id, InvocationStatus.SUCCESS, runner_ctx)
        self._report_status(invocation_id, InvocationStatus.SUCCESS)
        self.app.trigger.report_invocation_result(invocation, result)

    @retry_transient
    def _store_result_if_owner(
        self, invocation_id: InvocationId, result: str, runner_id: str
    ) -> None:
        """Store the result only while the invocation may still become SUCCESS for this
        runner (RUNNING, owned by it), in one statement. The SUCCESS follows in a second
        one: if the invocation is taken from this runner in between, it runs again, and
        that run's result overwrites this one, as it should."""
        free, owned, _ = _SUCCESS_PLAN
        self._execute(
            self._store_result_sql,
            [
                self.app.app_id,
                invocation_id,
                result,
                self.app.app_id,
                invocation_id,
                *free,
                *owned,
                runner_id,
            ],
        )

    @cached_property
    def _store_result_sql(self) -> str:
        from pynenc_django.models import Invocation, InvocationResult

        free, owned, _ = _SUCCESS_PLAN
        qn = self.connection.ops.quote_name
        _, upsert = self.dialect.conflict_clause(qn, ("app_id", "invocation_id"), ("result",))
        return (
            f"INSERT INTO {self._table(InvocationResult)} (app_id, invocation_id, result) "
            f"SELECT %s, %s, %s{self.dialect.from_nothing} "
            f"WHERE EXISTS (SELECT 1 FROM {self._table(Invocation)} WHERE app_id = %s "
            f"AND invocation_id = %s AND {self._allowed_sql(len(free), len(owned), False)})"
            f"{upsert}"
        )

    def set_invocation_exception(
        self, invocation: DistributedInvocation, exception: Exception, runner_ctx: RunnerContext
    ) -> None:
        """pynenc's, except for a database error of our own write (:func:`storage_write`):
        the task did not fail, its RUNNING or its result could not be stored. Raised
        again instead, unrecorded, so the invocation is not final and its worker puts
        it back in its queue (at-least-once, never a FAILED that nothing ran)."""
        if getattr(exception, STORAGE_ERROR, False):
            raise exception
        super().set_invocation_exception(invocation, exception, runner_ctx)

    def record_status_change(
        self,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_ctx: RunnerContext,
        result: str | None = None,
    ) -> InvocationStatusRecord:
        """Every write of a status change, without pynenc's trigger report (the admin's
        entry point): the transition, with a final status's purge time in the same
        UPDATE; its history and, on final statuses, the waiters' release, done by the
        database where it can (:attr:`history_by_database`)."""
        # The history row names this context: stored first, once per process.
        self.app.state_backend.store_runner_context(runner_ctx)
        if self.history_by_database:
            record = self._atomic_status_transition(
                invocation_id, status, runner_ctx.runner_id, final=status.is_final(), result=result
            )
        else:
            record = self._change_with_history(invocation_id, status, runner_ctx)
        if status.is_final():
            signal_after_commit(self.db_alias, self._final_signal)
        return record

    @cached_property
    def _final_signal(self) -> str | None:
        """SQLite: the file waiting clients watch for final statuses (:mod:`.wakeup`)."""
        return signal_path(self.db_alias, FINAL_SIGNAL) if self.conf.django_listen_notify else None

    @retry_transient
    def _change_with_history(
        self, invocation_id: InvocationId, status: InvocationStatus, runner_ctx: RunnerContext
    ) -> InvocationStatusRecord:
        """Without the database's triggers: the transition, the waiters' release and the
        history row commit together, so nobody sees a status before its history (inside a
        caller's transaction, such as the claim, with it: no savepoint needed)."""
        with nullcontext() if self.connection.in_atomic_block else self.write_transaction():
            record = self._atomic_status_transition(
                invocation_id, status, runner_ctx.runner_id, final=status.is_final()
            )
            if status.is_final():
                self.release_waiters(invocation_id)
            self.app.state_backend.add_history(invocation_id, record, runner_ctx)
        return record

    @retry_transient
    def _atomic_status_transition(
        self,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_id: str | None = None,
        final: bool = False,
        result: str | None = None,
    ) -> InvocationStatusRecord:
        """Validate with pynenc's state machine and write, as one unit.

        Usually one UPDATE whose WHERE clause is the state machine (:func:`_transition_plan`),
        atomic on every database. When it matches nothing, or the rules need the current
        owner, the row is read and locked (``SELECT ... FOR UPDATE`` on PostgreSQL/MariaDB,
        the write lock on SQLite), validated by pynenc, which raises its own errors, and
        written with an UPDATE that also matches the status it read. Either way a
        concurrent writer can only ever make this call fail, never be silently overwritten.
        ``final`` also stamps ``auto_purge_at``, saving pynenc's separate UPDATE.
        ``status_context_id`` names the changer for the history trigger. ``result`` (a
        serialized result, PostgreSQL only) is stored by the same statement, before the
        status changes, as pynenc's ``set_invocation_result`` stores it.
        """
        if result is not None and not self.dialect.writes_in_ctes:
            raise ValueError(f"{self.dialect.name} cannot store a result with the transition")
        purge_at = now_utc() if final else None
        extra: dict[str, Any] = {"status_context_id": runner_id}
        if final:
            extra["auto_purge_at"] = purge_at
        plan = _transition_plan(status, runner_id is not None)
        if plan is not None:
            free, owned, caller_owns = plan
            record = InvocationStatusRecord(status, runner_id if caller_owns else None)
            sql = self._transition_sql(
                len(free),
                len(owned),
                runner_id is None,
                final,
                result is not None,
                status == InvocationStatus.RUNNING and self._commits_running_async,
            )
            params: list[Any] = [
                status.value,
                record.runner_id,
                self._db_time(record.timestamp),
                runner_id,
            ]
            if purge_at is not None:  # final
                params.append(self._db_time(purge_at))
            params += [self.app.app_id, invocation_id, *free, *owned]
            if owned and runner_id is not None:
                params.append(runner_id)
            if result is not None:
                params += [self.app.app_id, result]
            if self._execute(sql, params) == 1:
                return record
        with self.write_transaction():
            row = (
                self._invocations()
                .select_for_update()
                .filter(invocation_id=invocation_id)
                .values_list("status", "status_runner_id", "status_timestamp")
                .first()
            )
            if row is None:
                raise InvocationNotStoredError.for_app(
                    invocation_id, self.app.app_id, self.db_alias
                )
            current = InvocationStatusRecord(InvocationStatus(row[0]), row[1], row[2])
            new_record = status_record_transition(current, status, runner_id)
            if result is not None:  # only once the transition is known to be allowed
                self._django_state_backend.store_result(invocation_id, result)
            updated = (
                self._invocations()
                .filter(invocation_id=invocation_id, status=row[0], status_timestamp=row[2])
                .update(
                    status=new_record.status.value,
                    status_runner_id=new_record.runner_id,
                    status_timestamp=new_record.timestamp,
                    **extra,
                )
            )
            if updated != 1:  # pragma: no cover - only reachable without row locks
                raise RuntimeError(f"Concurrent status change on invocation {invocation_id}")
        return new_record

    @property
    def _commits_running_async(self) -> bool:
        """Whether RUNNING commits without waiting for the WAL flush
        (``django_async_claim_commits``; the SUCCESS or failure that follows flushes it
        anyway). Only in a statement of its own: in a caller's transaction the setting
        would apply to the caller's commit."""
        return self.commits_claims_async and not self.connection.in_atomic_block

    @cache  # noqa: B019 (a handful of shapes per orchestrator, which lives as long as its app)
    def _transition_sql(
        self,
        free: int,
        owned: int,
        no_owner: bool,
        final: bool,
        with_result: bool,
        async_commit: bool = False,
    ) -> str:
        """The UPDATE of :meth:`_atomic_status_transition`'s fast path, for one shape.
        ``async_commit``: its own transaction commits without waiting for the WAL flush
        (see :attr:`_commits_running_async`)."""
        from pynenc_django.models import Invocation, InvocationResult

        purge = ", auto_purge_at = %s" if final else ""
        no_flush = self.dialect.no_flush_condition if async_commit else ""
        update = (
            f"UPDATE {self._table(Invocation)} SET status = %s, status_runner_id = %s, "
            f"status_timestamp = {self.dialect.status_time_after_current()}, "
            f"status_context_id = %s{purge} "
            f"WHERE app_id = %s AND invocation_id = %s AND {self._allowed_sql(free, owned, no_owner)}"
            f"{no_flush}"
        )
        if not with_result:
            return update
        # The result is stored only if the transition happened (its row count is the
        # statement's): a late run of an invocation that was recovered and run again
        # elsewhere must not overwrite the result of the run that counted.
        return (
            f"WITH moved AS ({update} RETURNING invocation_id) "
            f"INSERT INTO {self._table(InvocationResult)} (app_id, invocation_id, result) "
            "SELECT %s, invocation_id, %s FROM moved "
            "ON CONFLICT (app_id, invocation_id) DO UPDATE SET result = EXCLUDED.result"
        )

    def _allowed_sql(self, free: int, owned: int, no_owner: bool) -> str:
        """The state machine's part of a transition's WHERE clause (its parameters: the
        ``free`` statuses, the ``owned`` ones, then the owner unless ``no_owner``)."""
        # On PostgreSQL as expressions no index serves (see Vendor.unindexed).
        status = self.dialect.unindexed("status")
        runner = self.dialect.unindexed("status_runner_id")
        allowed = []
        if free:
            allowed.append(f"{status} IN ({', '.join(['%s'] * free)})")
        if owned:
            owner = "status_runner_id IS NULL" if no_owner else f"{runner} = %s"
            allowed.append(f"({status} IN ({', '.join(['%s'] * owned)}) AND {owner})")
        return f"({' OR '.join(allowed) or '1 = 0'})"

    @retry_transient
    def increment_invocation_retries(self, invocation_id: str) -> None:
        from django.db.models import F

        self._invocations().filter(invocation_id=invocation_id).update(
            retry_count=F("retry_count") + 1
        )

    @retry_transient
    def get_invocation_retries(self, invocation_id: str) -> int:
        value = (
            self._invocations()
            .filter(invocation_id=invocation_id)
            .values_list("retry_count", flat=True)
            .first()
        )
        return int(value or 0)
