"""A health snapshot of one pynenc app, read straight from the tables.

Shared by ``manage.py pynenc_status`` (a liveness probe), the admin overview and the
demo's summary, so all three agree on what "alive" and "stalled" mean. Every query is
bounded by an index that starts with ``app_id``; nothing here scans a whole table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pynenc.invocation.status import InvocationStatus

from pynenc_django.utils import now_utc

# Statuses of invocations waiting for a worker.
WAITING = (InvocationStatus.REGISTERED, InvocationStatus.REROUTED, InvocationStatus.RETRY)
# How many atomic-service intervals may pass without a completed run before the
# cluster counts as stalled (pynenc spreads runs over slots; one may be skipped).
STALL_INTERVALS = 3


@dataclass
class RunnerState:
    runner_id: str
    alive: bool
    started_at: datetime
    last_heartbeat: datetime
    can_run_atomic_service: bool
    queues: list[str]


@dataclass
class StatusReport:
    app_id: str
    checked_at: datetime
    runners: list[RunnerState]
    queue_depth: dict[str, int]
    counts_by_status: dict[str, int]
    oldest_waiting_age_sec: float | None
    executions_last_hour: dict[str, int]
    last_completed_execution: datetime | None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def runners_alive(self) -> int:
        return sum(1 for r in self.runners if r.alive)

    @property
    def runners_dead(self) -> int:
        return sum(1 for r in self.runners if not r.alive)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        data["runners_alive"] = self.runners_alive
        data["runners_dead"] = self.runners_dead
        return _isoformat(data)


def _isoformat(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _isoformat(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_isoformat(v) for v in value]
    return value


def collect_status(
    app_id: str,
    alias: str,
    *,
    dead_after: timedelta,
    atomic_interval: timedelta,
    worker_runners: bool = True,
) -> StatusReport:
    """Read the snapshot. ``dead_after`` and ``atomic_interval`` come from the app's
    pynenc config (``runner_considered_dead_after_minutes``,
    ``atomic_service_interval_minutes``)."""
    from django.db.models import Count, Min

    from pynenc_django.models import (
        AtomicServiceExecution,
        BrokerMessage,
        Invocation,
        RunnerHeartbeat,
    )

    now = now_utc()
    heartbeats = RunnerHeartbeat.objects.using(alias).for_app(app_id)
    runners = [
        RunnerState(
            runner_id=row.runner_id,
            alive=row.last_heartbeat >= now - dead_after,
            started_at=row.created_at,
            last_heartbeat=row.last_heartbeat,
            can_run_atomic_service=row.can_run_atomic_service,
            queues=list(row.consumed_queues or ()),
        )
        for row in heartbeats.filter(last_heartbeat__gte=now - dead_after * 6).order_by(
            "-last_heartbeat"
        )[:500]
    ]
    queue_depth = dict(
        BrokerMessage.objects.using(alias)
        .for_app(app_id)
        .values_list("queue")
        .annotate(n=Count("id"))
        .order_by("queue")
    )
    invocations = Invocation.objects.using(alias).for_app(app_id)
    counts = dict(invocations.values_list("status").annotate(n=Count("id")).order_by("status"))
    oldest = invocations.filter(status__in=[s.value for s in WAITING]).aggregate(
        oldest=Min("status_timestamp")
    )["oldest"]
    executions = AtomicServiceExecution.objects.using(alias).for_app(app_id)
    last_hour = dict(
        executions.filter(start_time__gte=now - timedelta(hours=1))
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by("status")
    )
    last_completed = (
        executions.filter(status="completed")
        .order_by("-start_time")
        .values_list("end_time", flat=True)
        .first()
    )
    report = StatusReport(
        app_id=app_id,
        checked_at=now,
        runners=runners,
        queue_depth=queue_depth,
        counts_by_status=counts,
        oldest_waiting_age_sec=(now - oldest).total_seconds() if oldest else None,
        executions_last_hour=last_hour,
        last_completed_execution=last_completed,
    )
    report.problems = _problems(report, executions, now, atomic_interval, worker_runners)
    return report


def _problems(
    report: StatusReport,
    executions: Any,
    now: datetime,
    atomic_interval: timedelta,
    worker_runners: bool,
) -> list[str]:
    problems: list[str] = []
    if worker_runners and not report.runners_alive:
        problems.append("no live runner: nothing is executing invocations")
    atomic_runners = [r for r in report.runners if r.alive and r.can_run_atomic_service]
    stall_after = atomic_interval * STALL_INTERVALS
    if atomic_runners:
        last = report.last_completed_execution
        first_seen = min(r.started_at for r in atomic_runners)
        if (last is None or now - last > stall_after) and now - first_seen > stall_after:
            problems.append(
                "atomic services stalled: no completed run since "
                + (last.isoformat() if last else "ever")
                + f" (expected every {atomic_interval})"
            )
    stuck = (
        executions.filter(status="running", start_time__lt=now - atomic_interval)
        .values_list("run_id", "runner_id")
        .first()
    )
    if stuck:
        problems.append(
            f"atomic service run {stuck[0]} of runner {stuck[1]} has been RUNNING for longer "
            f"than its interval ({atomic_interval})"
        )
    return problems
