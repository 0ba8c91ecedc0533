"""A health snapshot of one pynenc app, read straight from the tables.

Shared by ``manage.py pynenc_status`` (a liveness probe), the admin overview and the
demo's summary, so all three agree on what "alive", "stalled" and "stuck" mean. Every
query is bounded by an index that starts with ``app_id``; nothing here scans a whole table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from pynenc.invocation.status import InvocationStatus, get_status_definition

from pynenc_django.conf import ConfigDjango
from pynenc_django.utils import now_utc

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from pynenc_django.models import InvocationHistory

# Statuses of invocations waiting for a worker.
WAITING = (InvocationStatus.REGISTERED, InvocationStatus.REROUTED, InvocationStatus.RETRY)
# How many atomic-service intervals may pass without a completed run before the
# cluster counts as stalled (pynenc spreads runs over slots; one may be skipped).
STALL_INTERVALS = 3

S = InvocationStatus
#: Statuses no worker owns that still lead to PENDING (pynenc's state machine: not final,
#: ownership released): queued, held by concurrency control, or on the way back to a
#: queue (KILLED, the recoveries). A waited invocation in one of them waits for a worker.
UNCLAIMED = tuple(
    s.value for s in S if not s.is_final() and get_status_definition(s).releases_ownership
)
#: A waiter in these holds its worker while it waits.
WAITER_STATUSES = (S.RUNNING.value, S.PAUSED.value)
#: A worker owning an invocation in these that waits for nothing is making progress.
BUSY_STATUSES = (S.PENDING.value, S.RUNNING.value)
FINAL = tuple(s.value for s in S.get_final_statuses())
#: The oldest waits checked for a stuck one, how many of those found are described, and
#: how many waited invocations whose status changed within the bound (concurrency control
#: rerouting them again and again) may have their history read.
STUCK_WAIT_SCAN = 200
STUCK_WAIT_SHOWN = 3
STUCK_WAIT_HISTORY_READS = 20
DEFAULT_STUCK_WAIT_AFTER = timedelta(seconds=float(ConfigDjango.django_stuck_wait_after_sec))


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
    stuck_wait_after: timedelta = DEFAULT_STUCK_WAIT_AFTER,
) -> StatusReport:
    """Read the snapshot. ``dead_after`` and ``atomic_interval`` come from the app's
    pynenc config (``runner_considered_dead_after_minutes``,
    ``atomic_service_interval_minutes``), ``stuck_wait_after`` from
    ``django_stuck_wait_after_sec``."""
    from django.db.models import Count, Min

    from pynenc_django.models import (
        AtomicServiceExecution,
        BrokerMessage,
        Invocation,
    )

    now = now_utc()
    runners = _runner_states(app_id, alias, now, dead_after)
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
    report.problems += stuck_waits(app_id, alias, now, stuck_wait_after, lambda: runners)
    return report


def _runner_states(
    app_id: str, alias: str, now: datetime, dead_after: timedelta
) -> list[RunnerState]:
    from pynenc_django.models import RunnerHeartbeat

    heartbeats = RunnerHeartbeat.objects.using(alias).for_app(app_id)
    return [
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


class _Inv(NamedTuple):
    invocation_id: str
    task_id_key: str
    status: str
    owner: str | None
    since: datetime


def stuck_waits(
    app_id: str,
    alias: str,
    now: datetime,
    after: timedelta,
    runners: Callable[[], list[RunnerState]],
) -> list[str]:
    """Waits that cannot progress: a RUNNING (or PAUSED) invocation has waited ``after``
    for one that no worker has taken for as long, and its worker runs nothing else.

    A waiting worker runs what it waits for itself when it can, so a waited invocation
    left unclaimed points at what no worker can resolve: a queue no live runner consumes,
    concurrency control holding it. The worker condition keeps a worker that is running
    one child while its waiter's next child stays queued from counting as stuck.
    Only the :data:`STUCK_WAIT_SCAN` oldest waits are checked (the table holds live waits
    only), at most :data:`STUCK_WAIT_HISTORY_READS` histories read, and at most
    :data:`STUCK_WAIT_SHOWN` waits described.
    """
    from django.db.models import Exists, OuterRef

    from pynenc_django.models import (
        BlockingEdge,
        BrokerMessage,
        DelayedMessage,
        Invocation,
        InvocationHistory,
    )

    cutoff = now - after
    edges = BlockingEdge.objects.using(alias).for_app(app_id)
    invocations = Invocation.objects.using(alias).for_app(app_id)
    oldest = list(
        edges.filter(created_at__lte=cutoff)
        .order_by("created_at", "id")
        .values_list("waiter_id", "waited_id", "created_at")[:STUCK_WAIT_SCAN]
    )
    if not oldest:
        return []
    ids = {invocation_id for edge in oldest for invocation_id in edge[:2]}
    waits_for_time = DelayedMessage.objects.using(alias).filter(
        app_id=OuterRef("app_id"), invocation_id=OuterRef("invocation_id")
    )
    listed = (
        invocations.filter(invocation_id__in=ids)
        .annotate(delayed=Exists(waits_for_time))
        .values_list(
            "invocation_id",
            "task_id_key",
            "status",
            "status_runner_id",
            "status_timestamp",
            "delayed",
        )
    )
    rows, delayed = {}, set()
    for *row, is_delayed in listed:
        rows[row[0]] = _Inv(*row)
        if is_delayed:  # waits for its due time (a countdown, a retry's backoff): not stuck
            delayed.add(row[0])
    candidates = [
        (rows[waiter_id], rows[waited_id], waited_since)
        for waiter_id, waited_id, waited_since in oldest
        if waiter_id in rows
        and waited_id in rows
        and rows[waiter_id].status in WAITER_STATUSES
        and rows[waited_id].status in UNCLAIMED
    ]
    candidates = [c for c in candidates if c[1].invocation_id not in delayed]
    if not candidates:
        return []
    # Owners running something that does not itself wait for an unfinished invocation.
    unfinished = invocations.filter(invocation_id=OuterRef("waited_id")).exclude(status__in=FINAL)
    waits = edges.filter(waiter_id=OuterRef("invocation_id")).filter(Exists(unfinished))
    owners = {waiter.owner for waiter, _, _ in candidates if waiter.owner}
    busy = set(
        invocations.filter(status_runner_id__in=owners, status__in=BUSY_STATUSES)
        .filter(~Exists(waits))
        .values_list("status_runner_id", flat=True)[:STUCK_WAIT_SCAN]
    )
    history = InvocationHistory.objects.using(alias).for_app(app_id)
    stuck: list[tuple[_Inv, _Inv, datetime, datetime, bool]] = []
    history_reads = 0
    for waiter, waited, waited_since in candidates:
        if waiter.owner in busy:
            continue
        if waited.since <= cutoff:  # in this status since before the cutoff
            unclaimed = (waited.since, waited.status == S.CONCURRENCY_CONTROLLED.value)
        elif history_reads < STUCK_WAIT_HISTORY_READS:
            history_reads += 1
            if not (found := _unclaimed_since(history, waited.invocation_id, cutoff)):
                continue
            unclaimed = found
        else:
            continue
        stuck.append((waiter, waited, waited_since, *unclaimed))
    if not stuck:
        return []
    alive = [runner for runner in runners() if runner.alive]
    every_queue = any(not runner.queues for runner in alive)  # [] consumes them all
    consumed = {queue for runner in alive for queue in runner.queues}
    shown = stuck[:STUCK_WAIT_SHOWN]
    queues = dict(
        BrokerMessage.objects.using(alias)
        .for_app(app_id)
        .filter(invocation_id__in=[waited.invocation_id for _, waited, *_ in shown])
        .values_list("invocation_id", "queue")
    )
    problems = []
    for waiter, waited, waited_since, unclaimed_since, held in shown:
        queue = queues.get(waited.invocation_id)
        if queue is not None and not every_queue and queue not in consumed:
            reason = f"its queue {queue!r} is consumed by no live runner"
        elif held:
            reason = "concurrency control holds it back"
        else:
            reason = "no worker took it" + (f" from queue {queue!r}" if queue else "")
        problems.append(
            f"stuck wait: invocation {waiter.invocation_id} ({waiter.task_id_key}) has waited "
            f"{_duration(now - waited_since)} for {waited.invocation_id} ({waited.task_id_key}),"
            f" unclaimed ({waited.status}) for {_duration(now - unclaimed_since)}, and its "
            f"worker {waiter.owner} runs nothing else: {reason}"
        )
    if len(stuck) > STUCK_WAIT_SHOWN:
        checked = (
            f" of the {STUCK_WAIT_SCAN} oldest waits" if len(oldest) == STUCK_WAIT_SCAN else ""
        )
        problems.append(f"{len(stuck) - STUCK_WAIT_SHOWN} more stuck waits{checked}")
    return problems


def _unclaimed_since(
    history: QuerySet[InvocationHistory], invocation_id: str, cutoff: datetime
) -> tuple[datetime, bool] | None:
    """For an invocation whose status changed after ``cutoff``: when its last status
    change before it was, and whether concurrency control held it back since, provided no
    worker claimed it meanwhile. Concurrency control rerouting it again and again keeps
    its status fresh while it never runs. Two reads of the (app_id, invocation_id,
    timestamp) index: the status at the cutoff, then those since."""
    of_it = history.filter(invocation_id=invocation_id)
    before = list(
        of_it.filter(timestamp__lte=cutoff)
        .order_by("-timestamp")
        .values_list("status", "timestamp")[:1]
    )
    if not before or before[0][0] not in UNCLAIMED:
        return None
    after = set(of_it.filter(timestamp__gt=cutoff).values_list("status", flat=True).distinct())
    if not after <= set(UNCLAIMED):
        return None  # a worker took it meanwhile
    return before[0][1], S.CONCURRENCY_CONTROLLED.value in after | {before[0][0]}


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"
