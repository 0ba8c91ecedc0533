"""Retention: delete finished work older than a cutoff from every pynenc table.

Deletes go in small batches, each its own short transaction found through an index that
starts with ``app_id``, so a purge of millions of rows never holds a big lock for long
and can be interrupted and resumed at any point. Only *final* invocations (SUCCESS,
FAILED, CONCURRENCY_CONTROLLED_FINAL) are ever deleted, with everything keyed by their
ids: status, arguments, history, result, exception, blocking edges, event links.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Min
from pynenc.invocation.status import InvocationStatus

from pynenc_django.db import write_transaction

FINAL_STATUSES = tuple(sorted(InvocationStatus.get_final_statuses(), key=str))


@dataclass
class PurgeReport:
    deleted: dict[str, int] = field(default_factory=dict)

    def add(self, table: str, count: int) -> None:
        self.deleted[table] = self.deleted.get(table, 0) + count

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


Progress = Callable[[str, int], None]


def _models() -> dict[str, Any]:
    from django.apps import apps

    return {model.__name__: model for model in apps.get_app_config("pynenc_django").get_models()}


def purge(
    app_id: str,
    alias: str,
    *,
    cutoff: datetime,
    statuses: Iterable[InvocationStatus] = FINAL_STATUSES,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PurgeReport:
    """Delete (or, with ``dry_run``, count) what is older than ``cutoff``."""
    statuses = tuple(statuses)
    if not_final := [s for s in statuses if not s.is_final()]:
        raise ValueError(
            f"only final statuses can be purged, not {', '.join(map(str, not_final))}: "
            "other invocations are still owned by runners or waiting to run"
        )
    m = _models()
    report = PurgeReport()
    step = progress or (lambda table, count: None)
    invocations = m["Invocation"].objects.using(alias).for_app(app_id)
    old = invocations.filter(status__in=[s.value for s in statuses], status_timestamp__lt=cutoff)
    live_floor = invocations.exclude(status__in=[s.value for s in FINAL_STATUSES]).aggregate(
        oldest=Min("registered_at")
    )["oldest"]
    if dry_run:
        report.add("invocations", old.count())
    else:
        _purge_invocations(m, app_id, alias, old, batch_size, report, step)

    def scoped(name: str) -> Any:
        return m[name].objects.using(alias).for_app(app_id)

    tables = [
        (
            "events",
            scoped("EventEntry").filter(timestamp__lt=cutoff),
            "event_id",
            [scoped("EventConditionMatch"), scoped("EventTriggeredInvocation")],
        ),
        (
            "trigger runs",
            scoped("TriggerRunEntry").filter(executed_at__lt=cutoff),
            "trigger_run_id",
            [scoped("TriggerRunCondition")],
        ),
        (
            "trigger run claims",
            scoped("TriggerRunClaim").filter(expiration__lt=cutoff),
            "trigger_run_id",
            [],
        ),
        (
            "atomic-service executions",
            scoped("AtomicServiceExecution").filter(end_time__lt=cutoff).exclude(status="running"),
            "run_id",
            [],
        ),
        (
            "runner heartbeats",
            scoped("RunnerHeartbeat").filter(last_heartbeat__lt=cutoff),
            "runner_id",
            [],
        ),
    ]
    if set(statuses) == set(FINAL_STATUSES):
        # Client data is shared by content hash and re-stamped on every store, so a value
        # last stored before both the cutoff and the oldest unfinished invocation can only
        # be referenced by invocations that are final and purged.
        floor = min(cutoff, live_floor) if live_floor else cutoff
        tables.append(("client data", scoped("ClientData").filter(created_at__lt=floor), "id", []))
    for table, old_rows, key, dependents in tables:
        _purge_keyed(report, step, table, old_rows, key, dependents, batch_size, dry_run)
    return report


def _purge_invocations(
    m: dict[str, Any],
    app_id: str,
    alias: str,
    old: Any,
    batch_size: int,
    report: PurgeReport,
    step: Progress,
) -> None:
    by_invocation = [
        "InvocationArgument",
        "StateInvocation",
        "InvocationHistory",
        "InvocationResult",
        "InvocationException",
        "EventTriggeredInvocation",
        "RevokeRequest",  # left by a request its invocation finished before
    ]
    while rows := list(old.order_by("id").values_list("id", "invocation_id")[:batch_size]):
        ids = [invocation_id for _, invocation_id in rows]
        with write_transaction(alias):
            for name in by_invocation:
                manager = m[name].objects.using(alias).for_app(app_id)
                manager.filter(invocation_id__in=ids).delete()
            edges = m["BlockingEdge"].objects.using(alias).for_app(app_id)
            edges.filter(waiter_id__in=ids).delete()
            edges.filter(waited_id__in=ids).delete()
            deleted = m["Invocation"].objects.using(alias).filter(pk__in=[pk for pk, _ in rows])
            report.add("invocations", deleted.delete()[0])
        step("invocations", report.deleted["invocations"])


def _purge_keyed(
    report: PurgeReport,
    step: Progress,
    table: str,
    old: Any,
    key: str,
    dependents: list[Any],
    batch_size: int,
    dry_run: bool,
) -> None:
    """Delete ``old`` rows in batches, with rows of ``dependents`` sharing their ``key``."""
    if dry_run:
        report.add(table, old.count())
        return
    report.add(table, 0)
    while rows := list(old.order_by("id").values_list("id", key)[:batch_size]):
        keys = [value for _, value in rows]
        with write_transaction(str(old.db)):
            for dependent in dependents:
                dependent.filter(**{f"{key}__in": keys}).delete()
            batch = old.model.objects.using(old.db).filter(pk__in=[pk for pk, _ in rows])
            report.add(table, batch.delete()[0])
        step(table, report.deleted[table])
