"""The pynenc overview: one page per app with what an operator checks first.

Built to stay within 10 queries and about 40 ms of database time at ten million
invocations (``bench/admin_pages.py``), whatever the table sizes: every number reads an
index that starts with ``app_id``, and never more than :data:`COUNT_CAP` + 1 entries of it:

* one query (:func:`summary`) brings the counts by status (exact up to the cap), the
  oldest waiting and pending invocations (one index probe per status), each queue's
  depth (exact up to the cap) and the age of its head, the last hour's blocked and
  abandoned atomic-service runs, and the app's stored configuration;
* one ``EXPLAIN`` estimates whatever passed the cap (:func:`estimated_counts`; shown as
  "about", never as an exact number), and the app's total;
* one query reads the runners' heartbeats, for the live runners, the alive and dead
  counts and the stuck-wait check, which runs the same code as ``pynenc_status``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from pynenc.invocation.status import InvocationStatus

from pynenc_django.admin.base import (
    COUNT_CAP,
    app_ids,
    changelist_url,
    default_app_id,
    duration_text,
    local_time,
    rounded_estimate,
    runner_label,
    status_badge,
)
from pynenc_django.admin.config import db_alias, django_conf, prime_app_config, pynenc_conf
from pynenc_django.admin.sql import datetime_value, estimated_counts
from pynenc_django.models import (
    AppInfoRecord,
    AtomicServiceExecution,
    BrokerMessage,
    Invocation,
    RunnerContextRecord,
    RunnerHeartbeat,
)
from pynenc_django.models.orchestrator import AtomicServiceStatus
from pynenc_django.ops.status import RunnerState, stuck_waits
from pynenc_django.utils import now_utc
from pynenc_django.vendors import vendor_of

#: Counts by status and queue depths are exact up to this many rows.
STATUS_CAP = COUNT_CAP
#: Live runners listed by name (their workers are counted, not listed).
RUNNERS_LISTED = 20
#: Queues listed at most (the broker messages list has them all).
QUEUES_LISTED = 50
#: Heartbeats read at most (runners and their workers, newest first), as ``pynenc_status``.
HEARTBEATS_READ = 500
#: Statuses an invocation waits in before a runner takes it.
WAITING = (InvocationStatus.REGISTERED, InvocationStatus.REROUTED, InvocationStatus.RETRY)
#: ``pynenc_status`` considers the runners that beat within this many dead-after periods.
RECENT_RUNNERS = 6


def _sql(qs: QuerySet) -> tuple[str, list[Any]]:
    sql, params = qs.query.sql_with_params()
    return sql, list(params)


def summary(app_id: str, now: datetime) -> dict[str, Any]:
    """The overview's numbers in one query (see the module docstring).

    One row of uncorrelated scalar subqueries, each an index probe or a capped index
    range, joined to one row per queue (the queues read by skip scan, each with its capped
    depth and its head's time). Returns ``statuses`` (capped counts), ``oldest`` (the
    first status time per waiting status and PENDING), ``blocked_last_hour``,
    ``abandoned_last_hour``, ``app_info_json`` and ``queues`` (``[{queue, depth, head}]``).
    """
    alias = db_alias()
    connection = connections[alias]
    qn = connection.ops.quote_name
    invocations = Invocation.objects.using(alias).filter(app_id=app_id)
    executions = AtomicServiceExecution.objects.using(alias).filter(app_id=app_id)
    columns: list[tuple[str, str]] = []  # (key, SQL of a scalar subquery)
    params: list[Any] = []

    def column(key: str, sql: str, sql_params: list[Any]) -> None:
        columns.append((key, sql))
        params.extend(sql_params)

    def capped(qs: QuerySet) -> tuple[str, list[Any]]:
        sql, sql_params = _sql(qs.order_by().values_list("app_id")[: STATUS_CAP + 1])
        return f"SELECT COUNT(*) FROM ({sql}) capped", sql_params

    for status in InvocationStatus:
        column(f"status:{status.value}", *capped(invocations.filter(status=status.value)))
    for status in (*WAITING, InvocationStatus.PENDING):
        first = (
            invocations.filter(status=status.value)
            .order_by("status_timestamp")
            .values_list("status_timestamp")[:1]
        )
        column(f"oldest:{status.value}", *_sql(first))
    hour_ago = now - timedelta(hours=1)
    for key, run_status in (
        ("blocked_last_hour", AtomicServiceStatus.BLOCKED),
        ("abandoned_last_hour", AtomicServiceStatus.ABANDONED),
    ):
        runs = executions.filter(status=run_status.value, start_time__gte=hour_ago)
        sql, sql_params = _sql(runs.order_by().values_list("app_id"))
        column(key, f"SELECT COUNT(*) FROM ({sql}) runs", sql_params)
    info = AppInfoRecord.objects.using(alias).filter(app_id=app_id).values_list("app_info_json")
    column("app_info_json", *_sql(info[:1]))

    # The queues: a skip scan of (app_id, queue), then per queue two reads of its index.
    table = qn(BrokerMessage._meta.db_table)
    queue_sql, scopes = vendor_of(connection).distinct_values_sql(
        table, qn("queue"), f"{qn('app_id')} = %s AND "
    )
    # The skip scan's one column: ``v`` of the recursive query, the column's own name in
    # MariaDB's DISTINCT.
    value = "v" if "skip(v)" in queue_sql else qn("queue")
    scope = f"m.{qn('app_id')} = %s AND m.{qn('queue')} = q0.{value}"
    depth, depth_scopes = vendor_of(connection).capped_count_sql(table, scope, STATUS_CAP, qn("id"))
    head = (
        f"SELECT m.{qn('created_at')} FROM {table} m WHERE {scope} "
        f"ORDER BY m.{qn('priority')} DESC, m.{qn('created_at')}, m.{qn('id')} LIMIT 1"
    )
    queues = f"SELECT q0.{value} AS v, ({depth}) AS depth, ({head}) AS head FROM ({queue_sql}) q0"
    numbers = ", ".join(f"({sql}) AS c{i}" for i, (_, sql) in enumerate(columns))
    sql = f"SELECT w.*, q.v, q.depth, q.head FROM (SELECT {numbers}) w LEFT JOIN ({queues}) q ON 1 = 1"
    params += [*[app_id] * (depth_scopes + 1), *[app_id] * scopes, QUEUES_LISTED + 1]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    values = dict(zip((key for key, _ in columns), rows[0], strict=False))
    return {
        "statuses": {s.value: int(values[f"status:{s.value}"] or 0) for s in InvocationStatus},
        "oldest": {
            s.value: datetime_value(values[f"oldest:{s.value}"], using=alias)
            for s in (*WAITING, InvocationStatus.PENDING)
        },
        "blocked_last_hour": int(values["blocked_last_hour"] or 0),
        "abandoned_last_hour": int(values["abandoned_last_hour"] or 0),
        "app_info_json": values["app_info_json"],
        "queues": [
            {
                "queue": row[-3],
                "depth": int(row[-2] or 0),
                "head": datetime_value(row[-1], using=alias),
            }
            for row in rows
            if row[-3] is not None
        ],
    }


def count_text(exact: int, estimate: int | None) -> dict[str, Any]:
    """How a capped count shows: exact, "about" the planner's estimate, or "10,000+"."""
    if exact <= STATUS_CAP:
        return {"text": f"{exact:,}", "estimated": False}
    if estimate is None:
        return {"text": f"{STATUS_CAP:,}+", "estimated": False}
    return {"text": f"about {rounded_estimate(max(estimate, exact)):,}", "estimated": True}


def heartbeats(app_id: str) -> list[dict[str, Any]]:
    """The app's heartbeats, newest first, with their contexts' host, pid and parent: one
    query, at most :data:`HEARTBEATS_READ` + 1 rows."""
    alias = db_alias()
    contexts = RunnerContextRecord.objects.using(alias).filter(
        app_id=app_id, runner_id=OuterRef("runner_id")
    )
    return [
        dict(row)
        for row in RunnerHeartbeat.objects.using(alias)
        .filter(app_id=app_id)
        .annotate(
            host=Subquery(contexts.values("hostname")[:1]),
            pid=Subquery(contexts.values("pid")[:1]),
            parent=Subquery(contexts.values("parent_runner_id")[:1]),
        )
        .order_by("-last_heartbeat", "-id")
        .values(
            "runner_id",
            "name",
            "host",
            "pid",
            "parent",
            "consumed_queues",
            "can_run_atomic_service",
            "created_at",
            "last_heartbeat",
        )[: HEARTBEATS_READ + 1]
    ]


def runner_counts(app_id: str, beats: list[dict[str, Any]], cutoff: datetime) -> dict[str, int]:
    """Alive and dead runners: from the heartbeats read, or counted when there are more."""
    if len(beats) <= HEARTBEATS_READ:
        alive = sum(1 for b in beats if b["last_heartbeat"] >= cutoff)
        return {"alive": alive, "dead": len(beats) - alive}
    return (
        RunnerHeartbeat.objects.using(db_alias())
        .filter(app_id=app_id)
        .aggregate(
            alive=Count("id", filter=Q(last_heartbeat__gte=cutoff)),
            dead=Count("id", filter=Q(last_heartbeat__lt=cutoff)),
        )
    )


def runner_states(
    beats: list[dict[str, Any]], now: datetime, dead_after: timedelta
) -> list[RunnerState]:
    """The runners ``pynenc_status`` checks stuck waits against (its ``_runner_states``:
    those that beat within six dead-after periods, newest first, at most 500), from the
    heartbeats this page read anyway."""
    recent = now - dead_after * RECENT_RUNNERS
    return [
        RunnerState(
            runner_id=b["runner_id"],
            alive=b["last_heartbeat"] >= now - dead_after,
            started_at=b["created_at"],
            last_heartbeat=b["last_heartbeat"],
            can_run_atomic_service=b["can_run_atomic_service"],
            queues=list(b["consumed_queues"] or ()),
        )
        for b in beats[:HEARTBEATS_READ]
        if b["last_heartbeat"] >= recent
    ]


def overview_context(request: HttpRequest, app_id: str) -> dict[str, Any]:
    alias = db_alias()
    now = now_utc()
    numbers = summary(app_id, now)
    prime_app_config(app_id, numbers["app_info_json"], request)
    conf = pynenc_conf(app_id, request)
    dead_after = timedelta(minutes=float(conf.runner_considered_dead_after_minutes))

    counts = numbers["statuses"]
    over = {f"status:{s}": n for s, n in counts.items() if n > STATUS_CAP}
    over |= {
        f"queue:{q['queue']}": q["depth"] for q in numbers["queues"] if q["depth"] > STATUS_CAP
    }
    estimates: dict[str, int] | None = None
    if over:
        invocations = Invocation.objects.using(alias).filter(app_id=app_id)
        messages = BrokerMessage.objects.using(alias).filter(app_id=app_id)
        parts: dict[str, QuerySet] = {"total": invocations}
        for key in over:
            kind, value = key.split(":", 1)
            parts[key] = (
                invocations.filter(status=value)
                if kind == "status"
                else messages.filter(queue=value)
            )
        estimates = estimated_counts(parts, using=alias)
    estimated = estimates or {}

    beats = heartbeats(app_id)
    cutoff = now - dead_after
    live = sorted(
        (b for b in beats if b["last_heartbeat"] >= cutoff and b["parent"] is None),
        key=lambda b: (b["created_at"], b["runner_id"]),
    )
    states = runner_states(beats, now, dead_after)
    stuck = stuck_waits(
        app_id,
        alias,
        now,
        timedelta(seconds=float(django_conf(app_id, request).django_stuck_wait_after_sec)),
        lambda: states,
    )

    inv_url = changelist_url(Invocation, app_id=app_id)
    rows = []
    for status in InvocationStatus:
        n = counts.get(status.value, 0)
        rows.append(
            {
                "badge": status_badge(status.value),
                "count": count_text(n, estimated.get(f"status:{status.value}")),
                "url": f"{inv_url}&status={status.value}",
                "final": status.is_final(),
            }
        )
    queues = [
        {
            "queue": q["queue"],
            "depth": count_text(q["depth"], estimated.get(f"queue:{q['queue']}")),
            "age": duration_text(q["head"], now).replace(" (running)", "") if q["head"] else "-",
        }
        for q in numbers["queues"][:QUEUES_LISTED]
    ]
    oldest = numbers["oldest"]
    waiting = [oldest[s.value] for s in WAITING if oldest[s.value] is not None]
    oldest_waiting = min(waiting) if waiting else None
    oldest_pending = oldest[InvocationStatus.PENDING.value]

    def age(at: datetime | None) -> str | None:
        return duration_text(at, now).replace(" (running)", "") if at else None

    return {
        "app_id": app_id,
        "status_rows": rows,
        "total_estimate": f"{rounded_estimate(estimated['total']):,}"
        if "total" in estimated
        else None,
        "queues": queues,
        "more_queues": len(numbers["queues"]) > QUEUES_LISTED,
        "oldest_waiting": oldest_waiting,
        "oldest_waiting_age": age(oldest_waiting),
        "oldest_pending_age": age(oldest_pending),
        "runners": runner_counts(app_id, beats, cutoff),
        "live_runners": [
            {
                "label": runner_label(app_id, b["runner_id"], b["name"], b["host"], b["pid"]),
                "queues": ", ".join(b["consumed_queues"] or []) or "all",
                "started": local_time(b["created_at"]),
                "last_heartbeat": local_time(b["last_heartbeat"]),
            }
            for b in live[:RUNNERS_LISTED]
        ],
        "more_live_runners": len(live) > RUNNERS_LISTED,
        "dead_after_minutes": float(conf.runner_considered_dead_after_minutes),
        "executions": {
            "blocked_last_hour": numbers["blocked_last_hour"],
            "abandoned_last_hour": numbers["abandoned_last_hour"],
        },
        "stuck_waits": stuck,
        "count_cap": f"{STATUS_CAP:,}",
        "capped": bool(over),
        "urls": {
            "runners_alive": changelist_url(RunnerHeartbeat, app_id=app_id, alive="yes"),
            "runners_dead": changelist_url(RunnerHeartbeat, app_id=app_id, alive="no"),
            "blocked": changelist_url(AtomicServiceExecution, app_id=app_id, status="blocked"),
            "abandoned": changelist_url(AtomicServiceExecution, app_id=app_id, status="abandoned"),
            "queues": changelist_url(BrokerMessage, app_id=app_id),
        },
    }


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
