"""Admin for the orchestrator's tables: invocations, blocking edges, runners and
atomic-service executions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import ngettext
from pynenc.invocation.status import InvocationStatus

from pynenc_django.admin import actions as domain
from pynenc_django.admin.base import (
    AppIdFilter,
    FixedChoicesFilter,
    IndexedValuesFilter,
    PynencModelAdmin,
    annotated_runner,
    changelist_url,
    current_app_id,
    duration_text,
    indexed_values,
    invocation_link,
    local_time,
    request_cache,
    runner_annotations,
    runner_link,
    status_badge,
)
from pynenc_django.admin.config import (
    app_queues,
    db_alias,
    task_route,
)
from pynenc_django.admin.queries import (
    dead_cutoff,
    execution_summary,
    invocation_detail,
    liveness_badge,
    runner_detail,
)
from pynenc_django.admin.reasons import execution_annotations, reason_html
from pynenc_django.admin.sql import capped_counts
from pynenc_django.models import (
    AtomicServiceExecution,
    BlockingEdge,
    DelayedMessage,
    Invocation,
    RunnerContextRecord,
    RunnerHeartbeat,
)
from pynenc_django.models.orchestrator import AtomicServiceStatus

# --------------------------------------------------------------------------- invocations


class InvocationStatusFilter(FixedChoicesFilter):
    title = "status"
    parameter_name = "status"
    field = "status"
    choices_list = [(s.value, s.value) for s in InvocationStatus]


class TaskFilter(IndexedValuesFilter):
    """Tasks of the current app, read from the ``(app_id, task_id_key, status)`` index."""

    title = "task"
    parameter_name = "task"
    field = "task_id_key"


class QueueFilter(admin.SimpleListFilter):
    """Invocations of the tasks routed to a queue.

    Invocation rows do not store their queue (pynenc routes by task), so this maps the
    queue to its tasks and filters on the indexed ``task_id_key``.
    """

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        app_id = current_app_id(request)
        if app_id is None:
            return []
        queues = dict.fromkeys(app_queues(app_id, request))
        for queue in _task_queues(request, app_id).values():
            queues.setdefault(queue)
        return [(q, q) for q in queues]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        app_id = current_app_id(request)
        if not value or app_id is None:
            return queryset
        tasks = [t for t, q in _task_queues(request, app_id).items() if q == value]
        return queryset.filter(task_id_key__in=tasks)


def _task_queues(request: HttpRequest, app_id: str) -> dict[str, str]:
    cache = request_cache(request)
    key = f"task_queues:{app_id}"
    if key not in cache:
        tasks = indexed_values(Invocation, "task_id_key", app_id, request)
        cache[key] = {t: task_route(app_id, t, request).queue for t in tasks}
    return cache[key]


@admin.register(Invocation)
class InvocationAdmin(PynencModelAdmin):
    list_display = (
        "invocation_id",
        "app_id",
        "status_label",
        "task_id_key",
        "queue",
        "owner",
        "due",
        "registered_at",
        "status_timestamp",
        "retry_count",
    )
    list_display_links = ("invocation_id",)
    list_filter = (AppIdFilter, InvocationStatusFilter, TaskFilter, QueueFilter)
    # Only the ordering the (app_id, -registered_at, -id) index serves.
    sortable_by = ("registered_at",)
    ordering = ("-registered_at", "-id")
    date_hierarchy = "registered_at"
    exact_search_fields = ("invocation_id", "call_id_key", "status_runner_id")
    search_help_text = (
        "Invocation id (or its first 8 or more characters, as the logs show them), call id "
        "or owner runner id."
    )
    actions = ("rerun_invocations", "cancel_invocations", "reroute_invocations")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "app_id",
                    "invocation_id",
                    "task_id_key",
                    "call_id_key",
                    "status_label",
                    "owner",
                    "due",
                    "status_timestamp",
                    "registered_at",
                    "retry_count",
                    "auto_purge_at",
                )
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """The owner's name and place with each row (:func:`runner_annotations`), and its
        due time if it waits in the delayed messages (a subquery per listed row, through
        the (app_id, invocation_id) index; counts leave it out)."""
        owner = runner_annotations("owner", OuterRef("status_runner_id"))
        due = DelayedMessage.objects.filter(
            app_id=OuterRef("app_id"), invocation_id=OuterRef("invocation_id")
        ).values("due_at")[:1]
        return super().get_queryset(request).annotate(**owner, due_at=Subquery(due))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return [*super().get_readonly_fields(request, obj), "status_label", "owner", "due"]

    @admin.display(description="due at")
    def due(self, obj: Invocation) -> Any:
        """When a delayed invocation (a countdown, a retry's backoff) may run: no worker
        takes it before then. "-" when it is not waiting for a time."""
        due = getattr(obj, "due_at", None)
        return local_time(due) if due is not None else "-"

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Invocation) -> str:
        return status_badge(obj.status)

    @admin.display(description="owner runner")
    def owner(self, obj: Invocation) -> str:
        return annotated_runner(obj, obj.app_id, obj.status_runner_id, "owner")

    def decorate_results(self, request: HttpRequest, rows: list[Any]) -> None:
        for row in rows:
            row.route = task_route(row.app_id, row.task_id_key, request)

    @admin.display(description="queue")
    def queue(self, obj: Invocation) -> str:
        route = getattr(obj, "route", None)
        if route is None:
            return "-"
        if route.from_code:
            return route.queue
        return format_html(
            '<span title="{}">{}</span>',
            "from the app's configuration: the task is not registered in this web process",
            route.queue,
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        context = {"pynenc_app_id": lambda: current_app_id(request), **(extra_context or {})}
        return super().changelist_view(request, context)

    def get_urls(self) -> list[Any]:
        from pynenc_django.admin.overview import overview_view

        custom = [
            path(
                "overview/",
                self.admin_site.admin_view(overview_view),
                name="pynenc_django_overview",
            )
        ]
        return custom + super().get_urls()

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Invocation | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(invocation_detail(obj, request))
        return super().render_change_form(request, context, add, change, form_url, obj)

    # ------------------------------------------------------------------ actions

    def has_rerun_permission(self, request: HttpRequest) -> bool:
        """A rerun creates an invocation: ``add_invocation``."""
        return self.has_model_perm(request, "add")

    def has_transition_permission(self, request: HttpRequest) -> bool:
        """Cancel and reroute change an invocation's status: ``change_invocation``."""
        return self.has_model_perm(request, "change")

    @admin.action(description="Rerun selected invocations", permissions=["rerun"])
    def rerun_invocations(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self._confirmed_action(
            request,
            queryset,
            action="rerun_invocations",
            title="Rerun invocations",
            explain="Each becomes a new invocation of the same call (same stored arguments), "
            "registered and routed by the admin, linked to the original.",
            check=lambda inv: (True, "new invocation of the same call"),
            perform=domain.rerun,
            queue_choice=True,
        )

    @admin.action(
        description="Cancel selected invocations (registered only)", permissions=["transition"]
    )
    def cancel_invocations(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self._confirmed_action(
            request,
            queryset,
            action="cancel_invocations",
            title="Cancel invocations",
            explain="pynenc 0.4 has no cancelled status and only a runner that owns an "
            "invocation may kill it. A REGISTERED invocation, which no runner has "
            "taken yet, is moved to CONCURRENCY_CONTROLLED_FINAL: final, it never runs, and "
            "whatever waits for it is released.",
            check=domain.cancel_check,
            perform=lambda invs, user, queue: domain.cancel(invs, user),
        )

    @admin.action(description="Reroute selected invocations", permissions=["transition"])
    def reroute_invocations(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self._confirmed_action(
            request,
            queryset,
            action="reroute_invocations",
            title="Reroute invocations",
            explain="KILLED and CONCURRENCY_CONTROLLED invocations go back to their queue. A "
            "PENDING one past max_pending_seconds, or a PENDING or RUNNING one whose runner "
            "is dead, is recovered as pynenc's recovery tasks do. A live runner's "
            "invocation is never taken from it.",
            check=lambda inv: _reroute_check(inv, request),
            perform=domain.reroute,
            queue_choice=True,
        )

    def _confirmed_action(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        *,
        action: str,
        title: str,
        explain: str,
        check: Any,
        perform: Any,
        queue_choice: bool = False,
    ) -> Any:
        """Confirmation page first (GET-free: the form POSTs back with ``post=yes``)."""
        selected = list(queryset.order_by("-registered_at", "-id")[: domain.MAX_SELECTED + 1])
        if len(selected) > domain.MAX_SELECTED:
            self.message_user(
                request,
                f"Select at most {domain.MAX_SELECTED} invocations for one action.",
                messages.ERROR,
            )
            return None
        if request.POST.get("post") == "yes":
            queue = request.POST.get("queue") or None
            if queue and queue not in _queue_choices(selected, request):
                self.message_user(request, f"Unknown queue {queue!r}.", messages.ERROR)
                return None
            outcomes = perform(selected, request.user, queue)
            self._report(request, action, outcomes)
            return None
        rows = [(inv, *check(inv)) for inv in selected]
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "explain": explain,
            "opts": self.opts,
            "action": action,
            "rows": rows,
            "eligible": sum(1 for _, ok, _ in rows if ok),
            "queues": _queue_choices(selected, request) if queue_choice else None,
            "routes": _routes(selected, request) if queue_choice else None,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/pynenc_django/invocation/confirm_action.html", context
        )

    def _report(self, request: HttpRequest, action: str, outcomes: list[domain.Outcome]) -> None:
        """One message per outcome, and admin log entries recording who asked."""
        created = {
            inv.invocation_id: inv
            for inv in Invocation.objects.using(db_alias()).filter(
                app_id__in={o.invocation.app_id for o in outcomes},
                invocation_id__in=[o.new_invocation_id for o in outcomes if o.new_invocation_id],
            )
        }
        done = 0
        for outcome in outcomes:
            inv = outcome.invocation
            if not outcome.ok:
                self.message_user(
                    request, f"Invocation {inv.invocation_id}: {outcome.message}", messages.WARNING
                )
                continue
            done += 1
            note = f"{ACTION_NAMES[action]}: {outcome.message}"
            self.log_change(request, inv, note)
            new = created.get(outcome.new_invocation_id or "")
            if new is not None:
                self.log_addition(request, new, f"rerun of {inv.invocation_id}")
        if done:
            message = ngettext(
                "%(action)s: done for %(done)d of %(total)d selected invocation.",
                "%(action)s: done for %(done)d of %(total)d selected invocations.",
                len(outcomes),
            ) % {"action": ACTION_NAMES[action], "done": done, "total": len(outcomes)}
            self.message_user(request, message, messages.SUCCESS)


ACTION_NAMES = {
    "rerun_invocations": "Rerun",
    "cancel_invocations": "Cancel",
    "reroute_invocations": "Reroute",
}


def _reroute_check(inv: Invocation, request: HttpRequest) -> tuple[bool, str]:
    path_, why = domain.reroute_path(inv, request)
    return bool(path_), why


def _queue_choices(selected: list[Invocation], request: HttpRequest) -> list[str]:
    queues: dict[str, None] = {}
    for app_id in dict.fromkeys(inv.app_id for inv in selected):
        queues.update(dict.fromkeys(app_queues(app_id, request)))
    for route in _routes(selected, request).values():
        queues.setdefault(route.queue)
    return list(queues)


def _routes(selected: list[Invocation], request: HttpRequest) -> dict[str, Any]:
    return {inv.task_id_key: task_route(inv.app_id, inv.task_id_key, request) for inv in selected}


# --------------------------------------------------------------------------- blocking edges


@admin.register(BlockingEdge)
class BlockingEdgeAdmin(PynencModelAdmin):
    list_display = ("waiter", "waited", "app_id", "created_at")
    # The edge's own page opens from its time: the invocations link to themselves.
    list_display_links = ("created_at",)
    list_filter = (AppIdFilter,)
    exact_search_fields = ("waiter_id", "waited_id")
    search_help_text = "Invocation id, waiter or waited (or its first 8 or more characters)."
    ordering = ("-id",)
    sortable_by = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Both invocations' tasks with each edge: scalar subqueries on the
        ``(app_id, invocation_id)`` key, no query per row."""
        invocations = Invocation.objects.filter(app_id=OuterRef("app_id"))

        def task_of(column: str) -> Subquery:
            return Subquery(
                invocations.filter(invocation_id=OuterRef(column)).values("task_id_key")[:1]
            )

        return (
            super()
            .get_queryset(request)
            .annotate(waiter_task=task_of("waiter_id"), waited_task=task_of("waited_id"))
        )

    @staticmethod
    def _with_task(app_id: str, invocation_id: str, task: str | None) -> str:
        return format_html(
            "{} <small>{}</small>", invocation_link(app_id, invocation_id), task or "(purged)"
        )

    @admin.display(description="waiter (blocked)")
    def waiter(self, obj: BlockingEdge) -> str:
        return self._with_task(obj.app_id, obj.waiter_id, getattr(obj, "waiter_task", None))

    @admin.display(description="waits for")
    def waited(self, obj: BlockingEdge) -> str:
        return self._with_task(obj.app_id, obj.waited_id, getattr(obj, "waited_task", None))


# --------------------------------------------------------------------------- runners


class AliveFilter(admin.SimpleListFilter):
    """Alive means a heartbeat within ``runner_considered_dead_after_minutes``."""

    title = "liveness"
    parameter_name = "alive"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "alive"), ("no", "dead")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        app_id = current_app_id(request)
        if self.value() not in ("yes", "no") or app_id is None:
            return queryset
        cutoff = dead_cutoff(app_id, request)
        if self.value() == "yes":
            return queryset.filter(last_heartbeat__gte=cutoff)
        return queryset.filter(last_heartbeat__lt=cutoff)


#: Owned invocations counted per runner; a runner owns at most its concurrency.
OWNED_CAP = 1000


def owned_counts(runners: list[RunnerHeartbeat], cap: int) -> dict[str, int]:
    """``{"app_id<tab>runner_id": min(owned, cap)}``: capped counts on the owner index."""
    owned = [s.value for s in domain.OWNED_STATUSES]
    invocations = Invocation.objects.using(db_alias())
    return capped_counts(
        {
            f"{r.app_id}\t{r.runner_id}": invocations.filter(
                app_id=r.app_id, status_runner_id=r.runner_id, status__in=owned
            )
            for r in runners
        },
        cap,
        using=db_alias(),
    )


@admin.register(RunnerHeartbeat)
class RunnerHeartbeatAdmin(PynencModelAdmin):
    list_display = (
        "runner_id",
        "name",
        "app_id",
        "liveness",
        "last_heartbeat",
        "created_at",
        "hostname",
        "pid",
        "parent",
        "can_run_atomic_service",
        "queues",
        "owned",
    )
    list_filter = (AppIdFilter, AliveFilter, "can_run_atomic_service")
    exact_search_fields = ("runner_id", "name")
    search_help_text = "Runner id (or its first 8 or more characters) or name."
    ordering = ("-last_heartbeat", "-id")
    sortable_by = ("last_heartbeat",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Each runner's context as scalar subqueries on its ``(app_id, runner_id)`` key."""
        alias = db_alias()
        contexts = RunnerContextRecord.objects.using(alias).filter(
            app_id=OuterRef("app_id"), runner_id=OuterRef("runner_id")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                ctx_hostname=Subquery(contexts.values("hostname")[:1]),
                ctx_pid=Subquery(contexts.values("pid")[:1]),
                ctx_parent=Subquery(contexts.values("parent_runner_id")[:1]),
                ctx_cls=Subquery(contexts.values("runner_cls")[:1]),
            )
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        context = {"pynenc_app_id": lambda: current_app_id(request), **(extra_context or {})}
        return super().changelist_view(request, context)

    def decorate_results(self, request: HttpRequest, rows: list[Any]) -> None:
        """Liveness from the app's settings; owned invocations counted up to a cap, all
        rows of the page in one query."""
        owned = owned_counts(rows, OWNED_CAP + 1)
        for row in rows:
            row.alive = row.last_heartbeat >= dead_cutoff(row.app_id, request)
            row.owned_count = owned.get(f"{row.app_id}\t{row.runner_id}", 0)

    @admin.display(description="alive")
    def liveness(self, obj: RunnerHeartbeat) -> str:
        alive = getattr(obj, "alive", None)
        if alive is None:
            return "-"
        return liveness_badge(alive)

    @admin.display(description="hostname")
    def hostname(self, obj: RunnerHeartbeat) -> str:
        return getattr(obj, "ctx_hostname", None) or "-"

    @admin.display(description="pid")
    def pid(self, obj: RunnerHeartbeat) -> str:
        return str(getattr(obj, "ctx_pid", None) or "-")

    @admin.display(description="parent runner")
    def parent(self, obj: RunnerHeartbeat) -> str:
        return runner_link(obj.app_id, getattr(obj, "ctx_parent", None))

    @admin.display(description="consumed queues")
    def queues(self, obj: RunnerHeartbeat) -> str:
        return ", ".join(obj.consumed_queues or []) or "all"

    @admin.display(description="invocations owned")
    def owned(self, obj: RunnerHeartbeat) -> str:
        count = getattr(obj, "owned_count", None) or 0
        if not count:
            return "0"
        label = f"{OWNED_CAP:,}+" if count > OWNED_CAP else str(count)
        url = changelist_url(Invocation, app_id=obj.app_id, q=obj.runner_id)
        return format_html('<a href="{}">{}</a>', url, label)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: RunnerHeartbeat | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(runner_detail(obj, request))
        return super().render_change_form(request, context, add, change, form_url, obj)


# --------------------------------------------------------------------------- atomic services


class ExecutionStatusFilter(FixedChoicesFilter):
    title = "status"
    parameter_name = "status"
    field = "status"
    choices_list = [(s.value, s.label.upper()) for s in AtomicServiceStatus]


class ExecutionRunnerFilter(IndexedValuesFilter):
    title = "runner"
    parameter_name = "runner"
    field = "runner_id"


@admin.register(AtomicServiceExecution)
class AtomicServiceExecutionAdmin(PynencModelAdmin):
    list_display = (
        "run_id",
        "app_id",
        "status_label",
        "runner",
        "reason_text",
        "start_time",
        "end_time",
        "duration",
    )
    list_filter = (AppIdFilter, ExecutionStatusFilter, ExecutionRunnerFilter)
    exact_search_fields = ("run_id", "runner_id")
    search_help_text = "Run id or runner id (or their first 8 or more characters)."
    ordering = ("-start_time", "-id")
    sortable_by = ("start_time",)
    date_hierarchy = "start_time"
    fields = (
        "app_id",
        "run_id",
        "status_label",
        "runner",
        "reason_detail",
        "start_time",
        "end_time",
        "duration",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Runner names, and BLOCKED rows' holders, with the rows (see
        :mod:`pynenc_django.admin.reasons`)."""
        return super().get_queryset(request).annotate(**execution_annotations())

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return [
            *super().get_readonly_fields(request, obj),
            "status_label",
            "runner",
            "reason_detail",
            "duration",
        ]

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: AtomicServiceExecution) -> str:
        return status_badge(obj.status)

    @admin.display(description="runner")
    def runner(self, obj: AtomicServiceExecution) -> str:
        return annotated_runner(obj, obj.app_id, obj.runner_id, "runner")

    @admin.display(description="reason")
    def reason_text(self, obj: AtomicServiceExecution) -> str:
        return reason_html(obj)

    @admin.display(description="reason")
    def reason_detail(self, obj: AtomicServiceExecution) -> str:
        return reason_html(obj, raw_line=True)

    @admin.display(description="duration")
    def duration(self, obj: AtomicServiceExecution) -> str:
        return duration_text(obj.start_time, obj.end_time)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        context = {
            "pynenc_app_id": lambda: current_app_id(request),
            "pynenc_summary": lambda: execution_summary(request),
            "pynenc_summary_template": "admin/pynenc_django/atomicserviceexecution/summary.html",
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)
