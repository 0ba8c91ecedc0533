"""The cluster-wide atomic-service gate: at most one RUNNING execution per app, stamped at
admission, with dead holders finalized as ABANDONED.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pynenc.orchestrator.atomic_service import (
    AtomicServiceExecution,
    AtomicServiceExecutionStatus,
)

from pynenc_django.db import retry_transient
from pynenc_django.orchestrator.core import OrchestratorCore
from pynenc_django.orchestrator.rules import (
    ABANDONED,
    BLOCKED,
    RUNNING,
)
from pynenc_django.utils import (
    chunked,
    from_db_time,
    now_utc,
)

#: How often a process trims the atomic-service history after its own turns.
TURN_PURGE_INTERVAL_SEC = 60.0

if TYPE_CHECKING:
    from pynenc.orchestrator.atomic_service import AtomicServiceRun
    from pynenc.runner.runner_context import RunnerContext

    from pynenc_django.models import AtomicServiceExecution as ExecutionRow


class AtomicServiceMixin(OrchestratorCore):
    """Part of :class:`~pynenc_django.orchestrator.DjangoOrchestrator`; see the module docstring."""

    # ------------------------------------------------------------------ atomic services

    def _executions(self) -> Any:
        from pynenc_django.models import AtomicServiceExecution as Row

        return Row.objects.using(self.db_alias).for_app(self.app.app_id)

    def _gate(self) -> Any:
        from pynenc_django.models import AtomicServiceGate

        return AtomicServiceGate.objects.using(self.db_alias).filter(app_id=self.app.app_id)

    def _ensure_gate(self) -> None:
        from pynenc_django.models import AtomicServiceGate

        AtomicServiceGate.objects.using(self.db_alias).bulk_create(
            [AtomicServiceGate(app_id=self.app.app_id)], ignore_conflicts=True
        )

    def _stale_holder_reason(
        self, run_id: str, runner_id: str | None, since: datetime, dead_after: timedelta
    ) -> str:
        """Why the RUNNING holder of the gate must be considered dead, or ``""``.

        A holder is dead when its runner's heartbeat is older than ``dead_after`` (or it
        has none and the run started longer ago than that). Runners refresh their
        heartbeat before every claim (pynenc's) or every few seconds (ours), so a live
        holder is never reaped.
        """
        from pynenc_django.models import RunnerHeartbeat

        cutoff = now_utc() - dead_after
        last = (
            RunnerHeartbeat.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(runner_id=runner_id)
            .values_list("last_heartbeat", flat=True)
            .first()
        )
        if last is not None:
            if last < cutoff:
                return f"reaped: runner {runner_id} last heartbeat {last.isoformat()} is older than {dead_after}"
            return ""
        if since < cutoff:
            return f"reaped: runner {runner_id} has no heartbeat and run {run_id} started {since.isoformat()}"
        return ""

    def _reap_stale_holder(
        self, claimer_runner_id: str, now: datetime, dead_after: timedelta | None = None
    ) -> None:
        """Finalize a RUNNING execution left by a dead runner as ABANDONED and free the gate.

        A runner claims one run at a time, so a holder that is the claimer itself is a run
        whose finalization was lost (say, the database went away at that moment): it is
        over, and must not keep its own runner out forever.
        """
        gate = self._gate().values_list("running_run_id", "runner_id", "started_at").first()
        if not gate or gate[0] is None:
            return
        run_id, runner_id, started_at = gate
        if runner_id == claimer_runner_id:
            reason = f"superseded: runner {runner_id} claimed again, run {run_id} never finalized"
        else:
            if dead_after is None:
                minutes = float(self.app.conf.runner_considered_dead_after_minutes)
                dead_after = timedelta(minutes=minutes)
            reason = self._stale_holder_reason(
                run_id, runner_id, started_at or now_utc(), dead_after
            )
        if not reason:
            return
        if (
            self._gate()
            .filter(running_run_id=run_id)
            .update(running_run_id=None, runner_id=None, started_at=None)
        ):
            self._executions().filter(run_id=run_id, status=RUNNING.value).update(
                # Ends exactly when the claim that reaped it starts: windows never overlap.
                status=ABANDONED.value,
                end_time=now,
                reason=reason,
            )

    @retry_transient
    def record_atomic_service_execution_start(
        self,
        atomic_service_run: AtomicServiceRun,
        started_at: datetime | None,
        status: AtomicServiceExecutionStatus = RUNNING,
        reason: str = "",
    ) -> bool:
        """The cluster-wide gate: at most one RUNNING execution per app, on every database.

        The slot is claimed by a compare-and-set on the app's gate row; losers get a
        zero-width BLOCKED row naming the holder. A holder whose runner is dead is first
        finalized as ABANDONED so one crash never jams triggers and recovery for good.
        """
        ident = atomic_service_run.atomic_service_id
        if status != RUNNING:
            stamp = started_at or now_utc()
            atomic_service_run.started_at = stamp
            self._upsert_execution(
                ident.runner_id, ident.atomic_service_run_id, stamp, status, reason
            )
            self.purge_atomic_service_executions()
            return status != BLOCKED
        self._ensure_gate()
        with self.write_transaction():
            # Admission is the gate row's lock: a claim that waited for the previous
            # holder's finalization starts after that run's recorded end, not before it.
            # (pynenc's runner passes no ``started_at``, asking for exactly this.)
            self._gate().select_for_update().values_list("running_run_id").first()
            stamp = started_at or now_utc()
            atomic_service_run.started_at = stamp
            self._reap_stale_holder(ident.runner_id, stamp)
            claimed = (
                self._gate()
                .filter(running_run_id__isnull=True)
                .update(
                    running_run_id=ident.atomic_service_run_id,
                    runner_id=ident.runner_id,
                    started_at=stamp,
                )
            )
            if claimed:
                self._upsert_execution(
                    ident.runner_id, ident.atomic_service_run_id, stamp, RUNNING, reason
                )
                return True
            holder = self._gate().values_list("running_run_id", "runner_id").first()
            holder_run, holder_runner = holder or (None, None)
            if holder_run == ident.atomic_service_run_id:
                return True  # idempotent re-record of the run that holds the slot
            self._upsert_execution(
                ident.runner_id,
                ident.atomic_service_run_id,
                stamp,
                BLOCKED,
                reason or f"prior_running:{holder_run} runner:{holder_runner}",
            )
        self.purge_atomic_service_executions()
        return False

    @retry_transient
    def claim_atomic_service_turn(
        self, runner_ctx: RunnerContext, every_sec: float, holder_dead_after_sec: float
    ) -> AtomicServiceRun | None:
        """A :class:`~pynenc_django.runner.DjangoPersistentProcessRunner`'s turn at the
        atomic services: one run per ``every_sec`` cluster-wide, taken by whichever runner
        asks first once it is due, never while another runs.

        pynenc instead splits a 5-minute cycle into one slot per runner: a cron tick
        outside the evaluating runner's slot was lost, an event waited minutes, and a
        killed runner kept its slot for ``runner_considered_dead_after_minutes`` (10).
        Here a holder whose runner's heartbeat is older than ``holder_dead_after_sec`` is
        finalized ABANDONED and the next turn starts at once. Not due: one read. Due: a
        compare-and-set on the gate row, so two runners can never both start a turn.
        """
        from pynenc.orchestrator.atomic_service import AtomicServiceRun

        running_run_id, holder, _since, last_started = self._gate_state()
        if running_run_id is not None:
            self._reap_stale_holder(
                runner_ctx.runner_id, now_utc(), timedelta(seconds=holder_dead_after_sec)
            )
            running_run_id, holder, _since, last_started = self._gate_state()
        # Only now: a run seen released ended before this instant, so windows never overlap.
        now = now_utc()
        # A little early is on time: each runner tries every ``every_sec`` by its own clock.
        if last_started is not None and now - last_started < timedelta(seconds=every_sec * 0.9):
            return None
        run = AtomicServiceRun(runner_id=runner_ctx.runner_id, started_at=now)
        if running_run_id is not None:
            # Due, but another run holds the gate: said once per holder run and runner.
            if self._blocked_by != running_run_id:
                self._blocked_by = running_run_id
                self._upsert_execution(
                    runner_ctx.runner_id,
                    run.atomic_service_id.atomic_service_run_id,
                    now,
                    BLOCKED,
                    f"prior_running:{running_run_id} runner:{holder}",
                    new=True,
                )
            return None
        run_id = run.atomic_service_id.atomic_service_run_id
        free = self._gate().filter(running_run_id__isnull=True)
        if last_started is None:
            free = free.filter(last_started_at__isnull=True)
        else:
            free = free.filter(last_started_at=last_started)
        with self.write_transaction():
            if not free.update(
                running_run_id=run_id,
                runner_id=runner_ctx.runner_id,
                started_at=now,
                last_started_at=now,
            ):
                return None  # another runner took this turn
            self._upsert_execution(runner_ctx.runner_id, run_id, now, RUNNING, "", new=True)
        return run

    _blocked_by: str | None = None

    def _gate_state(self) -> tuple[str | None, str | None, datetime | None, datetime | None]:
        """(running run, its runner, since, last admitted) of this app's gate row."""
        columns = ("running_run_id", "runner_id", "started_at", "last_started_at")
        row = self._gate().values_list(*columns).first()
        if row is None:
            self._ensure_gate()
            row = self._gate().values_list(*columns).first()
        running, runner, since, last = row
        return running, runner, from_db_time(since), from_db_time(last)

    def _upsert_execution(
        self,
        runner_id: str,
        run_id: str,
        start: datetime,
        status: AtomicServiceExecutionStatus,
        reason: str,
        *,
        new: bool = False,
    ) -> None:
        """Record a run's execution row; ``new`` for a run id made just now, which no row
        can have yet: one ``INSERT``, without the ``UPDATE`` that would find nothing."""
        end = start if status == BLOCKED else None
        values = {
            "runner_id": runner_id,
            "status": status.value,
            "reason": reason,
            "start_time": start,
            "end_time": end,
        }
        if new or not self._executions().filter(run_id=run_id).update(**values):
            from pynenc_django.models import AtomicServiceExecution as Row

            Row.objects.using(self.db_alias).create(app_id=self.app.app_id, run_id=run_id, **values)

    @retry_transient
    def finalize_atomic_service_execution(
        self,
        atomic_service_run: AtomicServiceRun,
        end_time: datetime,
        status: AtomicServiceExecutionStatus,
        reason: str = "",
    ) -> None:
        """First terminal write wins; a run with no row at all still gets one (start=end)."""
        self._finalize_execution(atomic_service_run, end_time, status, reason)
        self.purge_atomic_service_executions()

    @retry_transient
    def finalize_atomic_service_turn(
        self,
        atomic_service_run: AtomicServiceRun,
        end_time: datetime,
        status: AtomicServiceExecutionStatus,
        reason: str = "",
    ) -> None:
        """:meth:`finalize_atomic_service_execution` for :meth:`claim_atomic_service_turn`'s
        runs, one a second: the history is trimmed at most once a minute per process."""
        self._finalize_execution(atomic_service_run, end_time, status, reason)
        if time.monotonic() >= self._next_turn_purge:
            self._next_turn_purge = time.monotonic() + TURN_PURGE_INTERVAL_SEC
            self.purge_atomic_service_executions()

    _next_turn_purge = 0.0

    def _finalize_execution(
        self,
        atomic_service_run: AtomicServiceRun,
        end_time: datetime,
        status: AtomicServiceExecutionStatus,
        reason: str,
    ) -> None:
        from pynenc_django.models import AtomicServiceExecution as Row

        ident = atomic_service_run.atomic_service_id
        run_id = ident.atomic_service_run_id
        with self.write_transaction():
            values: dict[str, Any] = {"status": status.value, "end_time": end_time}
            if reason:
                values["reason"] = reason
            updated = (
                self._executions().filter(run_id=run_id, status=RUNNING.value).update(**values)
            )
            self._gate().filter(running_run_id=run_id).update(
                running_run_id=None, runner_id=None, started_at=None
            )
            if not updated and not self._executions().filter(run_id=run_id).exists():
                Row.objects.using(self.db_alias).create(
                    app_id=self.app.app_id,
                    run_id=run_id,
                    runner_id=ident.runner_id,
                    status=status.value,
                    reason=reason,
                    start_time=end_time,
                    end_time=end_time,
                )

    @staticmethod
    def _to_execution(row: ExecutionRow) -> AtomicServiceExecution:
        return AtomicServiceExecution.from_raw(
            runner_id=row.runner_id,
            atomic_service_run_id=row.run_id,
            start_time=row.start_time,
            end_time=row.end_time,
            status=AtomicServiceExecutionStatus(row.status),
            reason=row.reason,
        )

    @retry_transient
    def get_active_atomic_service_executions(self) -> list[AtomicServiceExecution]:
        rows = self._executions().filter(status=RUNNING.value).order_by("-start_time")
        return [self._to_execution(row) for row in rows]

    @retry_transient
    def get_atomic_service_executions_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        limit: int = 1000,
        *,
        runner_id: str | None = None,
        min_duration_seconds: float = 0.0,
    ) -> list[AtomicServiceExecution]:
        """Windows overlapping [start, end]; an open (RUNNING) one overlaps if it started inside."""
        from django.db.models import Q

        qs = self._executions().filter(
            Q(end_time__gte=start_time) | Q(end_time__isnull=True, start_time__gte=start_time),
            start_time__lte=end_time,
        )
        if runner_id is not None:
            qs = qs.filter(runner_id=runner_id)
        if min_duration_seconds > 0.0:
            qs = qs.filter(end_time__isnull=False)
        rows = qs.order_by("-start_time", "-id")
        if min_duration_seconds <= 0.0:
            return [self._to_execution(row) for row in rows[: max(limit, 0)]]
        # Duration arithmetic differs per vendor; filter in Python over the window.
        result = []
        for row in rows.iterator():
            if (row.end_time - row.start_time).total_seconds() >= min_duration_seconds:
                result.append(self._to_execution(row))
                if len(result) >= limit:
                    break
        return result

    @retry_transient
    def purge_atomic_service_executions(self) -> int:
        """Trim history by age and count; never RUNNING rows, never runs a trigger run cites."""
        retention = float(self.app.conf.atomic_service_execution_retention_minutes)
        max_records = int(self.app.conf.atomic_service_execution_max_records)
        protected = set(self.app.trigger.get_referenced_atomic_service_run_ids())
        finished = self._executions().exclude(status=RUNNING.value)
        removed = 0
        if retention > 0:
            cutoff = now_utc() - timedelta(minutes=retention)
            removed += self._delete_runs(
                finished.filter(end_time__lt=cutoff).values_list("run_id", flat=True), protected
            )
        if max_records > 0:
            excess = finished.count() - max_records
            if excess > 0:
                oldest = finished.order_by("start_time", "id").values_list("run_id", flat=True)
                candidates = [r for r in oldest[: excess + len(protected)] if r not in protected]
                removed += self._delete_runs(candidates[:excess], protected)
        return removed

    def _delete_runs(self, run_ids: Iterable[str], protected: set[str]) -> int:
        doomed = [r for r in run_ids if r not in protected]
        removed = 0
        for chunk in chunked(doomed):
            removed += (
                self._executions()
                .filter(run_id__in=chunk)
                .exclude(status=RUNNING.value)
                .delete()[0]
            )
        return removed
