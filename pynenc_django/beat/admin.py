"""django-celery-beat's admin, speaking pynenc.

``PeriodicTask`` keeps django-celery-beat's admin (its fieldsets, schedule widgets and
enable/disable/toggle actions) with three changes: the task chooser lists pynenc's
registered tasks and the form refuses a name pynenc cannot run, naming it; "Run selected
tasks" registers pynenc invocations (each recorded as a ``run now``
:class:`~pynenc_django.beat.models.PeriodicTaskRun`) instead of Celery's ``apply_async``;
saving a task never writes back a stale ``last_run_at``/``total_run_count`` over what
the evaluator wrote meanwhile. Runs are listed read-only, each linking to its invocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

# Imported first so its registrations exist, whatever the order of INSTALLED_APPS.
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from pynenc_django.admin.base import ReadOnlyAdminMixin, invocation_link, time_columns
from pynenc_django.admin.config import db_alias
from pynenc_django.beat.models import PeriodicTaskRun
from pynenc_django.beat.names import UnknownTaskError, resolve_task, task_choices
from pynenc_django.beat.scheduler import MAX_PRIORITY, known_queues, run_now

if TYPE_CHECKING:
    from django.contrib.admin.views.main import ChangeList
    from pynenc import Pynenc


def _project_app() -> Pynenc | None:
    """The project's app; ``None`` while ``settings.PYNENC`` is unusable (``manage.py
    check`` names the problem)."""
    from pynenc_django.project import PynencSettingsError, get_app

    try:
        return get_app()
    except PynencSettingsError:
        return None


class PynencTaskSelectWidget(beat_admin.TaskSelectWidget):
    """django-celery-beat's chooser, filled from pynenc's registry instead of Celery's."""

    def tasks_as_choices(self) -> tuple[tuple[str, str], ...]:
        app = _project_app()
        names = task_choices(app) if app is not None else []
        return (("", ""), *((name, name) for name in names))


class PynencTaskChoiceField(beat_admin.TaskChoiceField):
    widget = PynencTaskSelectWidget


class PynencPeriodicTaskForm(beat_admin.PeriodicTaskForm):
    regtask = PynencTaskChoiceField(label="Task (registered with pynenc)", required=False)

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean()
        app = _project_app()
        if app is None:
            raise forms.ValidationError(
                "pynenc's settings (settings.PYNENC) cannot be used: run manage.py check."
            )
        name = data.get("task")
        if name:
            try:
                resolve_task(app, name)
            except UnknownTaskError as exc:
                self.add_error("regtask" if data.get("regtask") else "task", f"{exc}.")
        queue = (data.get("queue") or "").strip()
        if queue and queue not in (queues := known_queues(app)):
            self.add_error(
                "queue",
                f"Queue {queue!r} is not one of pynenc's queues ({', '.join(queues)}): add "
                "it to PYNENC['queues'], or leave this empty for the task's own queue.",
            )
        priority = data.get("priority")
        if priority is not None and priority > MAX_PRIORITY:
            self.add_error(
                "priority",
                f"pynenc's priorities go up to {MAX_PRIORITY} (higher runs first); "
                f"{priority} is over it.",
            )
        return data


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PynencPeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    form = PynencPeriodicTaskForm
    list_display = (*beat_admin.PeriodicTaskAdmin.list_display, "total_run_count", "runs")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # django-celery-beat warns that CELERY_BEAT_SCHEDULER is not its database
        # scheduler: pynenc's runners are the scheduler here.
        context = {**(extra_context or {}), "wrong_scheduler": False}
        return admin.ModelAdmin.changelist_view(self, request, context)

    def save_model(self, request: HttpRequest, obj: PeriodicTask, form: Any, change: bool) -> None:
        """Everything but ``last_run_at`` and ``total_run_count``, which the evaluator
        may have moved since the form was loaded (django-celery-beat's save writes back
        the loaded values). Disabling still clears ``last_run_at``, as
        django-celery-beat's model does."""
        if change and obj.enabled:
            kept = {"last_run_at", "total_run_count"}
            fields = [
                f.name
                for f in obj._meta.concrete_fields
                if not f.primary_key and f.name not in kept
            ]
            obj.save(update_fields=fields)
        else:
            obj.save()

    @admin.display(description="runs")
    def runs(self, obj: PeriodicTask) -> str:
        url = reverse("admin:pynenc_django_beat_periodictaskrun_changelist")
        return format_html(
            '<a href="{}?{}">runs</a>', url, urlencode({"periodic_task__id__exact": obj.pk})
        )

    @admin.action(description="Run selected tasks")
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        """Register one pynenc invocation per selected task now, each recorded as a
        ``run now`` run; an unknown task name is an error message naming it."""
        app = _project_app()
        if app is None:
            self.message_user(
                request, "pynenc's settings cannot be used: run manage.py check.", messages.ERROR
            )
            return
        started = []
        for periodic_task in queryset.select_related("interval", "crontab", "solar", "clocked"):
            run = run_now(app, periodic_task)
            if run.invocation_id:
                started.append((periodic_task.name, run.invocation_id))
            else:
                self.message_user(
                    request, f"{periodic_task.name!r} was not run: {run.error}", messages.ERROR
                )
        if started:
            listed = format_html_join(", ", "{} → <code>{}</code>", started)
            self.message_user(
                request,
                format_html("{} task(s) enqueued on pynenc: {}", len(started), listed),
                messages.SUCCESS,
            )


@admin.register(PeriodicTaskRun)
class PeriodicTaskRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit trail, read-only: what each due time (or "run now") became."""

    list_display = time_columns(
        PeriodicTaskRun,
        [
            "fired_at",
            "periodic_task_link",
            "reason",
            "due_at",
            "late_by",
            "missed",
            "invocation",
            "task_name",
            "error",
        ],
    )
    list_display_links = None
    list_filter = ("reason",)
    search_fields = ("=periodic_task_name", "=task_name", "=invocation_id")
    date_hierarchy = "fired_at"
    show_full_result_count = False
    fields = time_columns(
        PeriodicTaskRun,
        [
            "periodic_task_link",
            "task_name",
            "due_at",
            "fired_at",
            "reason",
            "late_by",
            "missed",
            "invocation",
            "error",
            "app_id",
            "atomic_service_run_id",
            "dedupe_key",
        ],
    )
    readonly_fields = fields

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """The page's invocations found in one query, so each row links to its page."""
        changelist = super().get_changelist_instance(request)
        changelist.result_list = list(changelist.result_list)
        _attach_invocation_pks(changelist.result_list)
        return changelist

    @admin.display(description="periodic task", ordering="periodic_task_name")
    def periodic_task_link(self, obj: PeriodicTaskRun) -> str:
        if obj.periodic_task_id is None:
            return format_html("{} <small>(deleted)</small>", obj.periodic_task_name)
        url = reverse("admin:django_celery_beat_periodictask_change", args=[obj.periodic_task_id])
        return format_html('<a href="{}">{}</a>', url, obj.periodic_task_name)

    @admin.display(description="late by", ordering="late_by_sec")
    def late_by(self, obj: PeriodicTaskRun) -> str:
        return f"{obj.late_by_sec:.1f}s"

    @admin.display(description="invocation")
    def invocation(self, obj: PeriodicTaskRun) -> str:
        """Its page when the invocation is stored; else the invocations list searched for
        its id (it was purged, or lives in another app's rows)."""
        if not obj.invocation_id:
            return "-"
        if not hasattr(obj, "_invocation_pk"):
            _attach_invocation_pks([obj])
        pk = obj._invocation_pk  # type: ignore[attr-defined]
        if pk is None:
            return invocation_link(obj.app_id, obj.invocation_id)
        url = reverse("admin:pynenc_django_invocation_change", args=[pk])
        return format_html(
            '<a class="pynenc-invocation" href="{}"><code>{}</code></a>', url, obj.invocation_id
        )


def _attach_invocation_pks(runs: list[PeriodicTaskRun]) -> None:
    """``run._invocation_pk``: the admin key of each run's invocation, or ``None``."""
    from pynenc_django.models import Invocation

    wanted = {(run.app_id, run.invocation_id) for run in runs if run.invocation_id}
    found: dict[tuple[str, str], int] = {}
    if wanted:
        rows = (
            Invocation.objects.using(db_alias())
            .filter(
                app_id__in={app_id for app_id, _ in wanted},
                invocation_id__in={invocation_id for _, invocation_id in wanted},
            )
            .values_list("app_id", "invocation_id", "pk")
        )
        found = {(app_id, inv): pk for app_id, inv, pk in rows}
    for run in runs:
        run._invocation_pk = found.get((run.app_id, run.invocation_id or ""))  # type: ignore[attr-defined]
