"""Admin for the state backend's runner contexts: where each runner, worker and thread ran."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest

from pynenc_django.admin.base import AppIdFilter, PynencModelAdmin, runner_link
from pynenc_django.models import RunnerContextRecord, RunnerHeartbeat


@admin.register(RunnerContextRecord)
class RunnerContextRecordAdmin(PynencModelAdmin):
    list_display = (
        "runner_id",
        "name",
        "app_id",
        "runner_cls",
        "hostname",
        "pid",
        "thread_id",
        "parent",
    )
    list_filter = (AppIdFilter,)
    exact_search_fields = ("runner_id",)
    search_help_text = "Runner id (or its first 8 or more characters)."
    ordering = ("app_id", "runner_id")
    sortable_by = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """The runner's name from its heartbeat, while it has one (a scalar subquery)."""
        beats = RunnerHeartbeat.objects.filter(
            app_id=OuterRef("app_id"), runner_id=OuterRef("runner_id")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(heartbeat_name=Subquery(beats.values("name")[:1]))
        )

    @admin.display(description="name")
    def name(self, obj: RunnerContextRecord) -> str:
        return getattr(obj, "heartbeat_name", None) or "-"

    @admin.display(description="parent runner")
    def parent(self, obj: RunnerContextRecord) -> str:
        return runner_link(obj.app_id, obj.parent_runner_id)
