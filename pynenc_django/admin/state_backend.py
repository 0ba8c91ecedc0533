"""Admin for the state backend's runner contexts: where each runner, worker and thread ran."""

from __future__ import annotations

from django.contrib import admin

from pynenc_django.admin.base import AppIdFilter, PynencModelAdmin, runner_link
from pynenc_django.models import RunnerContextRecord


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

    @admin.display(description="parent runner")
    def parent(self, obj: RunnerContextRecord) -> str:
        return runner_link(obj.app_id, obj.parent_runner_id)
