"""One row per due time of a django-celery-beat ``PeriodicTask`` that pynenc handled.

The row is the audit trail and the guard: its ``dedupe_key`` (the periodic task's id and
the due time) is unique, and it is written in the transaction that moves the task's
``last_run_at`` and registers the invocation, so no due time is ever fired twice, by two
runners or by one runner after a crash.
"""

from __future__ import annotations

from django.db import models

from pynenc_django.models.base import app_id_field, id_field

#: ``PeriodicTask.name`` and ``.task`` are ``max_length=200`` in django-celery-beat.
NAME_LENGTH = 200


class RunReason(models.TextChoices):
    SCHEDULE = "schedule", "schedule"
    LATE = "late", "late (missed due times coalesced)"
    RUN_NOW = "run now", "run now (admin)"
    EXPIRED = "expired", "expired (not run)"
    ERROR = "error", "error (not run)"


class PeriodicTaskRun(models.Model):
    """A due time (or an admin's "run now") of a periodic task, and what came of it."""

    #: The pynenc app that handled it (the invocation lives in its rows).
    app_id = app_id_field()
    periodic_task = models.ForeignKey(
        "django_celery_beat.PeriodicTask",
        on_delete=models.SET_NULL,  # the audit trail outlives the schedule
        null=True,
        blank=True,
        related_name="pynenc_runs",
    )
    periodic_task_name = models.CharField(max_length=NAME_LENGTH)
    #: ``PeriodicTask.task`` when it was handled: the pynenc task id (``module.function``).
    task_name = models.CharField(max_length=NAME_LENGTH)
    due_at = models.DateTimeField(help_text="The due time this run stands for.")
    fired_at = models.DateTimeField(help_text="When the evaluator (or the admin) handled it.")
    late_by_sec = models.FloatField(default=0.0)
    missed = models.PositiveIntegerField(
        default=0, help_text="Earlier due times not run and coalesced into this one."
    )
    reason = models.CharField(max_length=16, choices=RunReason.choices)
    invocation_id = id_field(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    #: The atomic-service execution that evaluated the schedule (none for "run now").
    atomic_service_run_id = id_field(null=True, blank=True)
    #: ``<periodic task id>@<due time, UTC ISO>``; ``@run-now@<uuid>`` for the admin's.
    dedupe_key = models.CharField(max_length=100, unique=True)

    class Meta:
        verbose_name = "periodic task run"
        verbose_name_plural = "periodic task runs"
        ordering = ["-fired_at", "-id"]
        indexes = [
            models.Index(fields=["-fired_at", "-id"], name="pynenc_beat_run_fired_idx"),
            models.Index(fields=["periodic_task", "-fired_at"], name="pynenc_beat_run_task_idx"),
            models.Index(fields=["reason", "-fired_at"], name="pynenc_beat_run_reason_idx"),
            models.Index(fields=["invocation_id"], name="pynenc_beat_run_inv_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.periodic_task_name} @ {self.due_at.isoformat()} [{self.reason}]"
