"""The queries behind the orchestrator's detail pages and summaries.

Each page's related rows come from a fixed number of queries whatever the data size:
related invocations' statuses and primary keys are scalar subqueries on the
``(app_id, invocation_id)`` key instead of one query per row, and every list is capped.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db.models import Count, F, Max, Min, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, NullIf
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from pynenc_django.admin import actions as domain
from pynenc_django.admin.base import (
    STATUS_COLORS,
    current_app_id,
    duration_text,
    invocation_link,
    local_time,
    pretty_stored_text,
    runner_link,
    status_badge,
)
from pynenc_django.admin.config import atomic_period, db_alias, prime_app_config, pynenc_conf
from pynenc_django.admin.reasons import execution_annotations, reason_html
from pynenc_django.models import (
    AppInfoRecord,
    AtomicServiceExecution,
    BlockingEdge,
    Invocation,
    InvocationException,
    InvocationHistory,
    InvocationResult,
    RunnerContextRecord,
    RunnerHeartbeat,
    StateInvocation,
)
from pynenc_django.models.orchestrator import AtomicServiceStatus

HISTORY_LIMIT = 500
RELATED_LIMIT = 100
CLIENT_DATA_PREFIX = "__pynenc__client_data__"


def _status_of(model_qs: QuerySet, ref: str, column: str = "status") -> Subquery:
    return Subquery(model_qs.filter(invocation_id=OuterRef(ref)).values(column)[:1])


def invocation_detail(inv: Invocation, request: HttpRequest) -> dict[str, Any]:
    """Everything the invocation page shows, in five queries whatever the data size."""
    alias = db_alias()
    app_id, iid = inv.app_id, inv.invocation_id
    invocations = Invocation.objects.using(alias).filter(app_id=app_id)

    state = (
        StateInvocation.objects.using(alias)
        .filter(app_id=app_id, invocation_id=iid)
        .annotate(
            parent_status=_status_of(invocations, "parent_invocation_id"),
            parent_pk=_status_of(invocations, "parent_invocation_id", "pk"),
            result_text=Subquery(
                InvocationResult.objects.using(alias)
                .filter(app_id=app_id, invocation_id=OuterRef("invocation_id"))
                .values("result")[:1]
            ),
            exception_text=Subquery(
                InvocationException.objects.using(alias)
                .filter(app_id=app_id, invocation_id=OuterRef("invocation_id"))
                .values("exception")[:1]
            ),
            # The app's configuration (liveness below), without a query of its own.
            app_info_json=Subquery(
                AppInfoRecord.objects.using(alias).filter(app_id=app_id).values("app_info_json")[:1]
            ),
        )
        .values(
            "serialized_arguments",
            "arguments_id",
            "parent_invocation_id",
            "parent_event_id",
            "workflow_id",
            "workflow_type_key",
            "parent_workflow_id",
            "parent_status",
            "parent_pk",
            "result_text",
            "exception_text",
            "app_info_json",
        )
        .first()
    )
    if state is not None:
        prime_app_config(app_id, state["app_info_json"], request)
    history = list(
        InvocationHistory.objects.using(alias)
        .filter(app_id=app_id, invocation_id=iid)
        .order_by("timestamp", "id")
        .values(
            "timestamp",
            "status",
            "status_runner_id",
            "runner_context_id",
            "registered_by_inv_id",
        )[:HISTORY_LIMIT]
    )
    edges = list(
        BlockingEdge.objects.using(alias)
        .filter(app_id=app_id)
        .filter(Q(waiter_id=iid) | Q(waited_id=iid))
        .annotate(
            waiter_status=_status_of(invocations, "waiter_id"),
            waiter_pk=_status_of(invocations, "waiter_id", "pk"),
            waited_status=_status_of(invocations, "waited_id"),
            waited_pk=_status_of(invocations, "waited_id", "pk"),
        )
        .order_by("created_at", "id")
        .values(
            "waiter_id",
            "waited_id",
            "created_at",
            "waiter_status",
            "waiter_pk",
            "waited_status",
            "waited_pk",
        )[: 2 * RELATED_LIMIT]
    )
    # Rows are decorated below: plain dicts, not the TypedDicts django-stubs give .values().
    children: list[dict[str, Any]] = [
        dict(row)
        for row in StateInvocation.objects.using(alias)
        .filter(app_id=app_id, parent_invocation_id=iid)
        .annotate(
            status=_status_of(invocations, "invocation_id"),
            inv_pk=_status_of(invocations, "invocation_id", "pk"),
        )
        .order_by("registered_at", "id")
        .values("invocation_id", "task_id_key", "status", "inv_pk", "registered_at")[
            : RELATED_LIMIT + 1
        ]
    ]
    context_ids = {h["runner_context_id"] for h in history} | {inv.status_runner_id}
    context_ids.discard(None)
    contexts_qs = RunnerContextRecord.objects.using(alias).filter(app_id=app_id)
    contexts: dict[str, dict[str, Any]] = {
        row["runner_id"]: dict(row)
        for row in contexts_qs.filter(
            Q(runner_id__in=context_ids)
            | Q(
                runner_id__in=contexts_qs.filter(runner_id__in=context_ids).values(
                    "parent_runner_id"
                )
            )
        )
        .annotate(
            last_heartbeat=Subquery(
                RunnerHeartbeat.objects.using(alias)
                .filter(app_id=app_id, runner_id=OuterRef("runner_id"))
                .values("last_heartbeat")[:1]
            ),
            runner_name=Coalesce(
                NullIf(
                    Subquery(
                        RunnerHeartbeat.objects.using(alias)
                        .filter(app_id=app_id, runner_id=OuterRef("runner_id"))
                        .values("name")[:1]
                    ),
                    Value(""),
                ),
                F("name"),
            ),
        )
        .values(
            "runner_id",
            "runner_cls",
            "parent_runner_id",
            "pid",
            "hostname",
            "thread_id",
            "last_heartbeat",
            "runner_name",
        )
    }
    dead_after = timedelta(
        minutes=float(pynenc_conf(app_id, request).runner_considered_dead_after_minutes)
    )
    now = timezone.now()
    for row in contexts.values():
        row["name"] = row.pop("runner_name")
        beat = row["last_heartbeat"]
        row["alive"] = None if beat is None else beat >= now - dead_after
        row["parent"] = contexts.get(row["parent_runner_id"] or "")

    timeline = []
    for i, entry in enumerate(history):
        nxt = history[i + 1]["timestamp"] if i + 1 < len(history) else None
        timeline.append(
            {
                **entry,
                "badge": status_badge(entry["status"]),
                "color": STATUS_COLORS.get(entry["status"], "#6c757d"),
                "duration": duration_text(entry["timestamp"], nxt) if nxt else "",
                "context": contexts.get(entry["runner_context_id"]),
                "registered_by": invocation_link(app_id, entry["registered_by_inv_id"]),
            }
        )

    def change_url(pk: Any) -> str | None:
        return reverse("admin:pynenc_django_invocation_change", args=[pk]) if pk else None

    waits_for = [
        {
            "id": e["waited_id"],
            "status": e["waited_status"],
            "url": change_url(e["waited_pk"]),
            "since": e["created_at"],
        }
        for e in edges
        if e["waiter_id"] == iid
    ]
    waited_by = [
        {
            "id": e["waiter_id"],
            "status": e["waiter_status"],
            "url": change_url(e["waiter_pk"]),
            "since": e["created_at"],
        }
        for e in edges
        if e["waited_id"] == iid
    ]
    for row in (*waits_for, *waited_by):
        row["badge"] = status_badge(row["status"]) if row["status"] else "-"
    for child in children:
        child["url"] = change_url(child["inv_pk"])
        child["badge"] = status_badge(child["status"]) if child["status"] else "-"

    detail: dict[str, Any] = {
        "pynenc": True,
        "state": state,
        "arguments": _arguments(state["serialized_arguments"]) if state else [],
        "result": _stored(state["result_text"]) if state else None,
        "exception": _exception(state["exception_text"]) if state else None,
        "timeline": timeline,
        "history_truncated": len(history) >= HISTORY_LIMIT,
        "waits_for": waits_for,
        "waited_by": waited_by,
        "children": children[:RELATED_LIMIT],
        "children_truncated": len(children) > RELATED_LIMIT,
        "owner_context": contexts.get(inv.status_runner_id or ""),
        "dead_after_minutes": dead_after.total_seconds() / 60,
    }
    if state and state["parent_invocation_id"]:
        detail["parent"] = {
            "id": state["parent_invocation_id"],
            "url": change_url(state["parent_pk"]),
            "badge": status_badge(state["parent_status"]) if state["parent_status"] else "-",
        }
    return detail


def _stored(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    return {
        "text": pretty_stored_text(text),
        "reference": text.startswith(CLIENT_DATA_PREFIX),
        "size": len(text),
    }


def _arguments(serialized: str) -> list[dict[str, Any]]:
    try:
        values = json.loads(serialized)
    except ValueError:
        return [{"name": "(stored arguments)", **(_stored(serialized) or {})}]
    if not isinstance(values, dict):
        return [{"name": "(stored arguments)", **(_stored(serialized) or {})}]
    return [{"name": name, **(_stored(str(value)) or {})} for name, value in values.items()]


def _exception(text: str | None) -> dict[str, Any] | None:
    """pynenc's exception envelope, read as JSON only (never rebuilt or unpickled).

    pynenc-django's envelope (:mod:`pynenc_django.serializer.envelope`) has the type's
    qualified name (``error_type``), the message and the worker's traceback. Envelopes
    without them (pynenc's own, older rows): ``error_data`` is the serializer's text;
    for jsonpickle it names the type and holds the arguments (``py/reduce``), which are
    shown as the message.
    """
    if text is None:
        return None
    info: dict[str, Any] = {
        "raw": pretty_stored_text(text),
        "name": "",
        "message": "",
        "traceback": "",
    }
    try:
        envelope = json.loads(text)
        info["name"] = str(envelope.get("error_type") or envelope.get("error_name", ""))
        if isinstance(envelope.get("message"), str):
            info["message"] = envelope["message"]
        if problem := envelope.get("error_data_problem"):
            info["message"] += f" (stored without its data: {problem})"
        if isinstance(envelope.get("traceback"), str):
            info["traceback"] = envelope["traceback"]
        data = envelope.get("error_data")
        parsed = json.loads(data) if isinstance(data, str) else data
    except (ValueError, AttributeError, TypeError):
        return info
    if isinstance(parsed, dict):
        reduce = parsed.get("py/reduce")
        if isinstance(reduce, list) and len(reduce) > 1 and isinstance(reduce[1], dict):
            args = reduce[1].get("py/tuple")
            if isinstance(args, list) and not info["message"]:
                info["message"] = ", ".join(str(a) for a in args)
        for key in ("message", "msg"):
            if not info["message"] and isinstance(parsed.get(key), str):
                info["message"] = parsed[key]
        tb = parsed.get("traceback") or parsed.get("formatted_traceback")
        if isinstance(tb, list):
            tb = "".join(str(line) for line in tb)
        if isinstance(tb, str) and not info["traceback"]:
            info["traceback"] = tb
    return info


def liveness_badge(alive: bool) -> str:
    return format_html(
        '<span class="pynenc-status" style="background:{};color:#fff;padding:1px 6px;'
        'border-radius:3px">{}</span>',
        "#28a745" if alive else "#dc3545",
        "ALIVE" if alive else "DEAD",
    )


def dead_cutoff(app_id: str, request: HttpRequest) -> Any:
    minutes = float(pynenc_conf(app_id, request).runner_considered_dead_after_minutes)
    return timezone.now() - timedelta(minutes=minutes)


def runner_detail(runner: RunnerHeartbeat, request: HttpRequest) -> dict[str, Any]:
    """Context, children, owned invocations and recent atomic-service runs: three queries."""
    alias = db_alias()
    app_id = runner.app_id
    contexts = list(
        RunnerContextRecord.objects.using(alias)
        .filter(app_id=app_id)
        .filter(Q(runner_id=runner.runner_id) | Q(parent_runner_id=runner.runner_id))
        .order_by("runner_id")
        .values("runner_id", "runner_cls", "parent_runner_id", "pid", "hostname", "thread_id")[
            : RELATED_LIMIT + 1
        ]
    )
    own = next((c for c in contexts if c["runner_id"] == runner.runner_id), None)
    children = [c for c in contexts if c["runner_id"] != runner.runner_id]
    owned = list(
        Invocation.objects.using(alias)
        .filter(
            app_id=app_id,
            status_runner_id=runner.runner_id,
            status__in=[s.value for s in domain.OWNED_STATUSES],
        )
        .order_by("status_timestamp")
        .values("pk", "invocation_id", "task_id_key", "status", "status_timestamp")[:RELATED_LIMIT]
    )
    annotations = execution_annotations()
    executions = list(
        AtomicServiceExecution.objects.using(alias)
        .filter(app_id=app_id, runner_id=runner.runner_id)
        .annotate(**annotations)
        .order_by("-start_time", "-id")
        .values(
            "pk",
            "app_id",
            "run_id",
            "runner_id",
            "status",
            "reason",
            "start_time",
            "end_time",
            *annotations,
        )[:20]
    )
    minutes = float(pynenc_conf(app_id, request).runner_considered_dead_after_minutes)
    alive = runner.last_heartbeat >= timezone.now() - timedelta(minutes=minutes)

    def inv_url(pk: int) -> str:
        return reverse("admin:pynenc_django_invocation_change", args=[pk])

    def run_url(pk: int) -> str:
        return reverse("admin:pynenc_django_atomicserviceexecution_change", args=[pk])

    return {
        "pynenc_sections": [
            {
                "title": "Runner",
                "headers": [
                    "alive",
                    "name",
                    "class",
                    "hostname",
                    "pid",
                    "thread",
                    "parent runner",
                ],
                "rows": [
                    [
                        format_html(
                            "{} <small>(dead after {} min without a heartbeat)</small>",
                            liveness_badge(alive),
                            f"{minutes:g}",
                        ),
                        runner.name or "-",
                        own["runner_cls"] if own else "-",
                        own["hostname"] if own else "-",
                        own["pid"] if own else "-",
                        own["thread_id"] if own else "-",
                        runner_link(app_id, own["parent_runner_id"]) if own else "-",
                    ]
                ],
            },
            {
                "title": "Child runner contexts (workers, threads)",
                "headers": ["runner", "class", "hostname", "pid"],
                "rows": [
                    [runner_link(app_id, c["runner_id"]), c["runner_cls"], c["hostname"], c["pid"]]
                    for c in children[:RELATED_LIMIT]
                ],
            },
            {
                "title": "Invocations owned (pending, running, paused)",
                "headers": ["invocation", "task", "status", "since"],
                "rows": [
                    [
                        format_html(
                            '<a href="{}"><code>{}</code></a>', inv_url(r["pk"]), r["invocation_id"]
                        ),
                        r["task_id_key"],
                        status_badge(r["status"]),
                        local_time(r["status_timestamp"]),
                    ]
                    for r in owned
                ],
            },
            {
                "title": "Recent atomic-service executions",
                "headers": ["run", "status", "reason", "start", "duration"],
                "rows": [
                    [
                        format_html(
                            '<a href="{}"><code>{}</code></a>', run_url(r["pk"]), r["run_id"]
                        ),
                        status_badge(r["status"]),
                        reason_html(r),
                        local_time(r["start_time"]),
                        duration_text(r["start_time"], r["end_time"]),
                    ]
                    for r in executions
                ],
            },
        ]
    }


def execution_summary(request: HttpRequest) -> dict[str, Any] | None:
    """The cards above the list, in one aggregate over the app's executions.

    The table is bounded by ``atomic_service_execution_max_records``, so this stays small.
    """
    app_id = current_app_id(request)
    if app_id is None:
        return None
    now = timezone.now()
    hour_ago = now - timedelta(hours=1)
    interval = atomic_period(app_id, request)
    done, blocked, running = (
        AtomicServiceStatus.COMPLETED.value,
        AtomicServiceStatus.BLOCKED.value,
        AtomicServiceStatus.RUNNING.value,
    )
    stats = (
        AtomicServiceExecution.objects.using(db_alias())
        .filter(app_id=app_id)
        .aggregate(
            last_completed=Max("end_time", filter=Q(status=done)),
            blocked_last_hour=Count("id", filter=Q(status=blocked, start_time__gte=hour_ago)),
            abandoned_last_hour=Count(
                "id", filter=Q(status=AtomicServiceStatus.ABANDONED.value, start_time__gte=hour_ago)
            ),
            running=Count("id", filter=Q(status=running)),
            overdue=Count("id", filter=Q(status=running, start_time__lt=now - interval)),
            oldest_running=Min("start_time", filter=Q(status=running)),
        )
    )
    stats["interval_minutes"] = interval.total_seconds() / 60
    stats["last_completed_ago"] = (
        duration_text(stats["last_completed"], now).replace(" (running)", "")
        if stats["last_completed"]
        else None
    )
    return stats
