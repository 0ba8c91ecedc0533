"""Admin for triggers: definitions, conditions, events and trigger runs, each linked to
the invocations it produced."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.text import Truncator

from pynenc_django.admin.base import (
    AppIdFilter,
    IndexedValuesFilter,
    PynencModelAdmin,
    changelist_url,
    invocation_link,
    local_time,
    pretty_stored_text,
)
from pynenc_django.admin.config import db_alias
from pynenc_django.models import (
    EventEntry,
    EventTriggeredInvocation,
    Invocation,
    TriggerConditionEntry,
    TriggerConditionLink,
    TriggerDefinitionEntry,
    TriggerRunCondition,
    TriggerRunEntry,
)

RELATED_LIMIT = 100


def _pre(text: str | None) -> str:
    return format_html('<pre class="pynenc-stored">{}</pre>', pretty_stored_text(text))


def _short(text: str | None, length: int = 80) -> str:
    return Truncator(text or "").chars(length)


class TriggerAdmin(PynencModelAdmin):
    """Shared: detail pages list related rows through ``related_sections``."""

    def related_sections(self, obj: Any) -> list[dict[str, Any]]:
        return []

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Model | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["pynenc_sections"] = self.related_sections(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)


class TaskKeyFilter(IndexedValuesFilter):
    title = "task"
    parameter_name = "task"
    field = "task_id_key"


@admin.register(TriggerDefinitionEntry)
class TriggerDefinitionAdmin(TriggerAdmin):
    list_display = ("trigger_id", "app_id", "task", "logic_value")
    list_filter = (AppIdFilter, TaskKeyFilter)
    exact_search_fields = ("trigger_id", "task_id_key")
    search_help_text = "Exact trigger id or task id."
    ordering = ("app_id", "task_id_key", "id")
    sortable_by = ()

    @admin.display(description="runs task")
    def task(self, obj: TriggerDefinitionEntry) -> str:
        url = changelist_url(Invocation, app_id=obj.app_id, task=obj.task_id_key)
        return format_html('<a href="{}">{}</a>', url, obj.task_id_key)

    def related_sections(self, obj: TriggerDefinitionEntry) -> list[dict[str, Any]]:
        links = (
            TriggerConditionLink.objects.using(db_alias())
            .filter(app_id=obj.app_id, trigger_id=obj.trigger_id)
            .order_by("position")
            .values_list("position", "condition_id")[:RELATED_LIMIT]
        )
        url = changelist_url(TriggerRunEntry, app_id=obj.app_id, q=obj.trigger_id)
        return [
            {
                "title": "Conditions",
                "headers": ["#", "condition"],
                "rows": [[pos, format_html("<code>{}</code>", cid)] for pos, cid in links],
            },
            {
                "title": "Runs",
                "note": format_html('<a href="{}">Trigger runs of this trigger</a>', url),
                "headers": [],
                "rows": [],
            },
        ]


class ContextTypeFilter(IndexedValuesFilter):
    title = "context type"
    parameter_name = "context_type"
    field = "context_type"


@admin.register(TriggerConditionEntry)
class TriggerConditionAdmin(TriggerAdmin):
    list_display = ("condition", "app_id", "context_type", "last_cron_execution")
    list_filter = (AppIdFilter, ContextTypeFilter)
    exact_search_fields = ("condition_key",)
    search_help_text = "Exact condition key (sha256 of the condition id)."
    ordering = ("app_id", "condition_key")
    sortable_by = ()
    fields = (
        "app_id",
        "condition_key",
        "condition_id",
        "context_type",
        "last_cron_execution",
        "json",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "json"]

    @admin.display(description="condition")
    def condition(self, obj: TriggerConditionEntry) -> str:
        return _short(obj.condition_id)

    @admin.display(description="stored condition")
    def json(self, obj: TriggerConditionEntry) -> str:
        return _pre(obj.condition_json)


class EventCodeFilter(IndexedValuesFilter):
    title = "event code"
    parameter_name = "event_code"
    field = "event_code"


@admin.register(EventEntry)
class EventEntryAdmin(TriggerAdmin):
    list_display = (
        "event_id",
        "app_id",
        "event_code",
        "timestamp",
        "matched_condition_count",
        "triggered_invocation_count",
        "emitted_by",
    )
    list_filter = (AppIdFilter, EventCodeFilter)
    exact_search_fields = ("event_id", "emitted_by_invocation_id")
    search_help_text = "Exact event id or emitting invocation id."
    ordering = ("-timestamp", "-id")
    sortable_by = ("timestamp",)
    date_hierarchy = "timestamp"
    fields = (
        "app_id",
        "event_id",
        "event_code",
        "timestamp",
        "matched_condition_count",
        "triggered_invocation_count",
        "emitted_by",
        "emitted_by_task_id",
        "emitted_by_runner_context_id",
        "payload",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "emitted_by", "payload"]

    @admin.display(description="emitted by")
    def emitted_by(self, obj: EventEntry) -> str:
        return invocation_link(obj.app_id, obj.emitted_by_invocation_id)

    @admin.display(description="stored event")
    def payload(self, obj: EventEntry) -> str:
        return _pre(obj.event_json)

    def related_sections(self, obj: EventEntry) -> list[dict[str, Any]]:
        rows = (
            EventTriggeredInvocation.objects.using(db_alias())
            .filter(app_id=obj.app_id, event_id=obj.event_id)
            .order_by("linked_at", "id")
            .values_list("invocation_id", "trigger_run_id", "linked_at")[:RELATED_LIMIT]
        )
        return [
            {
                "title": "Invocations triggered by this event",
                "headers": ["invocation", "trigger run", "linked at"],
                "rows": [
                    [invocation_link(obj.app_id, inv), run or "-", local_time(at)]
                    for inv, run, at in rows
                ],
            }
        ]


@admin.register(TriggerRunEntry)
class TriggerRunEntryAdmin(TriggerAdmin):
    list_display = (
        "trigger_run_id",
        "app_id",
        "trigger_id",
        "task_id_key",
        "logic_value",
        "executed_at",
        "invocation",
        "atomic_service_run_id",
    )
    list_filter = (AppIdFilter, TaskKeyFilter)
    exact_search_fields = ("trigger_run_id", "trigger_id", "triggered_invocation_id")
    search_help_text = "Exact trigger run id, trigger id or triggered invocation id."
    ordering = ("-executed_at", "-id")
    sortable_by = ("executed_at",)
    date_hierarchy = "executed_at"
    fields = (
        "app_id",
        "trigger_run_id",
        "trigger_id",
        "task_id_key",
        "logic_value",
        "claimed_at",
        "executed_at",
        "invocation",
        "atomic_service_run_id",
        "record",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "invocation", "record"]

    @admin.display(description="triggered invocation")
    def invocation(self, obj: TriggerRunEntry) -> str:
        return invocation_link(obj.app_id, obj.triggered_invocation_id)

    @admin.display(description="stored run")
    def record(self, obj: TriggerRunEntry) -> str:
        return _pre(obj.trigger_run_json)

    def related_sections(self, obj: TriggerRunEntry) -> list[dict[str, Any]]:
        rows = (
            TriggerRunCondition.objects.using(db_alias())
            .filter(app_id=obj.app_id, trigger_run_id=obj.trigger_run_id)
            .order_by("id")
            .values_list("context_type", "condition_id", "event_id", "source_invocation_id")[
                :RELATED_LIMIT
            ]
        )
        return [
            {
                "title": "What made it fire",
                "headers": ["context", "condition", "event", "source invocation"],
                "rows": [
                    [ctx or "-", _short(cond), event or "-", invocation_link(obj.app_id, src)]
                    for ctx, cond, event, src in rows
                ],
            }
        ]
