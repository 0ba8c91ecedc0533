"""The pynenc overview: one page per app with what an operator checks first.

Counts by status are exact up to :data:`STATUS_CAP` per status (one ``UNION ALL`` of
capped index range scans); queue depth reads only the broker table, which holds queued
work, not history.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Min, OuterRef, Q, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from pynenc.invocation.status import InvocationStatus

from pynenc_django.admin.base import (
    app_ids,
    changelist_url,
    default_app_id,
    duration_text,
    local_time,
    request_cache,
    runner_label,
    status_badge,
)
from pynenc_django.admin.config import db_alias, django_conf, pynenc_conf
from pynenc_django.admin.queries import execution_summary
from pynenc_django.admin.sql import capped_counts, estimated_count
from pynenc_django.models import BrokerMessage, Invocation, RunnerContextRecord, RunnerHeartbeat
from pynenc_django.ops.status import stuck_waits

STATUS_CAP = 10_000
#: Live runners listed by name (their workers are counted, not listed).
RUNNERS_LISTED = 20
#: Statuses an invocation waits in before a runner takes it.
WAITING = (InvocationStatus.REGISTERED, InvocationStatus.REROUTED, InvocationStatus.RETRY)


def status_counts(app_id: str) -> dict[str, int]:
    """``{status: min(count, STATUS_CAP + 1)}`` for every pynenc status, in one query."""
    invocations = Invocation.objects.using(db_alias()).filter(app_id=app_id)
    return capped_counts(
        {s.value: invocations.filter(status=s.value) for s in InvocationStatus},
        STATUS_CAP + 1,
        using=db_alias(),
    )


def overview_context(request: HttpRequest, app_id: str) -> dict[str, Any]:
    alias = db_alias()
    now = timezone.now()
    conf = pynenc_conf(app_id, request)
    counts = status_counts(app_id)
    saturated = any(n > STATUS_CAP for n in counts.values())
    total_estimate = (
        estimated_count(Invocation.objects.using(alias).filter(app_id=app_id))
        if saturated
        else None
    )
    queues: list[dict[str, Any]] = [
        dict(row)  # given an "age" below
        for row in BrokerMessage.objects.using(alias)
        .filter(app_id=app_id)
        .values("queue")
        .annotate(depth=Count("id"), oldest=Min("created_at"))
        .order_by("queue")
    ]
    waiting = [s.value for s in WAITING]
    oldest = (
        Invocation.objects.using(alias)
        .filter(app_id=app_id, status__in=[*waiting, InvocationStatus.PENDING.value])
        .aggregate(
            waiting=Min("status_timestamp", filter=Q(status__in=waiting)),
            pending=Min("status_timestamp", filter=Q(status=InvocationStatus.PENDING.value)),
        )
    )
    cutoff = now - timedelta(minutes=float(conf.runner_considered_dead_after_minutes))
    runners = (
        RunnerHeartbeat.objects.using(alias)
        .filter(app_id=app_id)
        .aggregate(
            alive=Count("id", filter=Q(last_heartbeat__gte=cutoff)),
            dead=Count("id", filter=Q(last_heartbeat__lt=cutoff)),
        )
    )
    live_runners = _live_runners(app_id, cutoff)
    request_cache(request)["app_id"] = app_id
    executions = execution_summary(request)
    stuck = stuck_waits(
        app_id,
        alias,
        after=timedelta(seconds=float(django_conf(app_id, request).django_stuck_wait_after_sec)),
        dead_after=timedelta(minutes=float(conf.runner_considered_dead_after_minutes)),
    )

    inv_url = changelist_url(Invocation, app_id=app_id)
    rows = []
    for status in InvocationStatus:
        n = counts.get(status.value, 0)
        rows.append(
            {
                "badge": status_badge(status.value),
                "count": f"{STATUS_CAP:,}+" if n > STATUS_CAP else f"{n:,}",
                "url": f"{inv_url}&status={status.value}",
                "final": status.is_final(),
            }
        )
    for queue in queues:
        queue["age"] = duration_text(queue["oldest"], now).replace(" (running)", "")
    from pynenc_django.models import AtomicServiceExecution

    return {
        "app_id": app_id,
        "status_rows": rows,
        "total_estimate": total_estimate,
        "queues": queues,
        "oldest_waiting": oldest["waiting"],
        "oldest_waiting_age": duration_text(oldest["waiting"], now).replace(" (running)", "")
        if oldest["waiting"]
        else None,
        "oldest_pending_age": duration_text(oldest["pending"], now).replace(" (running)", "")
        if oldest["pending"]
        else None,
        "runners": runners,
        "live_runners": live_runners[:RUNNERS_LISTED],
        "more_live_runners": len(live_runners) > RUNNERS_LISTED,
        "dead_after_minutes": float(conf.runner_considered_dead_after_minutes),
        "executions": executions,
        "stuck_waits": stuck,
        "urls": {
            "runners_alive": changelist_url(RunnerHeartbeat, app_id=app_id, alive="yes"),
            "runners_dead": changelist_url(RunnerHeartbeat, app_id=app_id, alive="no"),
            "blocked": changelist_url(AtomicServiceExecution, app_id=app_id, status="blocked"),
            "abandoned": changelist_url(AtomicServiceExecution, app_id=app_id, status="abandoned"),
            "queues": changelist_url(BrokerMessage, app_id=app_id),
        },
    }


def _live_runners(app_id: str, cutoff: Any) -> list[dict[str, Any]]:
    """Live runners (not their workers) with name, place and queues, in one query."""
    alias = db_alias()
    contexts = RunnerContextRecord.objects.using(alias).filter(
        app_id=app_id, runner_id=OuterRef("runner_id")
    )
    rows = (
        RunnerHeartbeat.objects.using(alias)
        .filter(app_id=app_id, last_heartbeat__gte=cutoff)
        .annotate(
            host=Subquery(contexts.values("hostname")[:1]),
            pid=Subquery(contexts.values("pid")[:1]),
            parent=Subquery(contexts.values("parent_runner_id")[:1]),
        )
        .filter(parent__isnull=True)
        .order_by("created_at", "runner_id")
        .values(
            "runner_id", "name", "host", "pid", "consumed_queues", "created_at", "last_heartbeat"
        )[: RUNNERS_LISTED + 1]
    )
    return [
        {
            "label": runner_label(app_id, r["runner_id"], r["name"], r["host"], r["pid"]),
            "queues": ", ".join(r["consumed_queues"] or []) or "all",
            "started": local_time(r["created_at"]),
            "last_heartbeat": local_time(r["last_heartbeat"]),
        }
        for r in rows
    ]


def overview_view(request: HttpRequest) -> HttpResponse:
    """Staff only (``admin_view``) and, like the invocation list, ``view_invocation``."""
    from django.contrib import admin

    if not request.user.has_perm("pynenc_django.view_invocation"):
        raise PermissionDenied
    ids = app_ids(Invocation, request)
    app_id = request.GET.get("app_id") or default_app_id(ids)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "pynenc overview",
        "app_ids": ids,
        "opts": Invocation._meta,
    }
    if app_id:
        context.update(overview_context(request, app_id))
    return TemplateResponse(request, "admin/pynenc_django/overview.html", context)
