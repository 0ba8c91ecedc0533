from django.db import models

from pynenc_django.models.base import (
    APP_ID_LENGTH,
    KEY_LENGTH,
    RUNNER_NAME_LENGTH,
    STATUS_LENGTH,
    AppScopedModel,
    id_field,
)
from pynenc_django.models.indexes import NotNullIndex


class Invocation(AppScopedModel):
    """The orchestrator's view of an invocation: its status, owner and retries."""

    invocation_id = id_field()
    task_id_key = models.CharField(max_length=KEY_LENGTH)
    call_id_key = models.CharField(max_length=KEY_LENGTH)
    status = models.CharField(max_length=STATUS_LENGTH)
    status_runner_id = id_field(null=True, blank=True)
    status_timestamp = models.DateTimeField()
    retry_count = models.PositiveIntegerField(default=0)
    # Set when the invocation reaches a final status; drives retention.
    auto_purge_at = models.DateTimeField(null=True, blank=True)
    # Never changes, so listings ordered by it page stably while statuses move.
    registered_at = models.DateTimeField()
    # Who made the last status change, and the invocation that registered this one: on
    # PostgreSQL and SQLite a database trigger (migration 0003) copies each status change
    # into the state history from these, in the statement that makes it.
    status_context_id = id_field(null=True, blank=True)
    registered_by_inv_id = id_field(null=True, blank=True)

    class Meta:
        db_table = "pynenc_invocation"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "invocation_id"], name="pynenc_invocation_id_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["app_id", "task_id_key", "status"], name="pynenc_inv_task_idx"),
            models.Index(fields=["app_id", "call_id_key"], name="pynenc_inv_call_idx"),
            models.Index(
                fields=["app_id", "status", "status_timestamp"], name="pynenc_inv_status_ts_idx"
            ),
            # No owner while REGISTERED, nor once final; no purge time until final: those
            # rows are left out (NotNullIndex), and a status change to or from them writes
            # no entry here.
            NotNullIndex(
                fields=["app_id", "status_runner_id", "status"],
                name="pynenc_inv_owner_idx",
                not_null="status_runner_id",
            ),
            models.Index(
                fields=["app_id", "-registered_at", "-id"], name="pynenc_inv_registered_idx"
            ),
            NotNullIndex(
                fields=["app_id", "auto_purge_at"],
                name="pynenc_inv_purge_idx",
                not_null="auto_purge_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invocation_id} [{self.status}]"


class InvocationArgument(AppScopedModel):
    """One serialized argument, indexed by hash for concurrency-control lookups."""

    invocation_id = id_field()
    arg_key = models.CharField(max_length=255)
    value_hash = models.CharField(max_length=64)
    arg_value = models.TextField()

    class Meta:
        db_table = "pynenc_invocation_argument"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "invocation_id", "arg_key"], name="pynenc_inv_arg_uniq"
            )
        ]
        indexes = [
            models.Index(
                fields=["app_id", "arg_key", "value_hash"], name="pynenc_inv_arg_value_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.invocation_id}.{self.arg_key}"


class BlockingEdge(AppScopedModel):
    """``waiter_id`` is blocked until ``waited_id`` reaches a final status."""

    waiter_id = id_field()
    waited_id = id_field()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "pynenc_blocking_edge"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "waiter_id", "waited_id"], name="pynenc_blocking_edge_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["app_id", "waited_id"], name="pynenc_blocking_waited_idx"),
            # The oldest waits first (the stuck-wait check of pynenc_status and the admin
            # overview) without sorting every live edge.
            models.Index(fields=["app_id", "created_at", "id"], name="pynenc_blocking_age_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.waiter_id} waits for {self.waited_id}"


class RunnerHeartbeat(AppScopedModel):
    """Liveness of one runner; slot assignment orders runners by ``created_at, runner_id``.

    ``name`` is what the operator called the runner (``pynenc_runner --name``), shared by
    its workers; empty when unnamed. A database default too, so rows written without it
    (older runners, bulk loads) stay valid.
    """

    runner_id = id_field()
    name = models.CharField(max_length=RUNNER_NAME_LENGTH, blank=True, default="", db_default="")
    created_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    can_run_atomic_service = models.BooleanField(default=False)
    consumed_queues = models.JSONField(default=list, blank=True)

    class Meta:
        db_table = "pynenc_runner_heartbeat"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "runner_id"], name="pynenc_runner_heartbeat_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["app_id", "last_heartbeat"], name="pynenc_runner_alive_idx"),
            models.Index(
                fields=["app_id", "created_at", "runner_id"], name="pynenc_runner_order_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.runner_id})" if self.name else self.runner_id


class RevokeRequest(AppScopedModel):
    """A revoke the runners carry out (``pynenc_django.revoke``): of a running invocation
    with ``terminate`` (the runner whose worker runs it kills the worker and records it
    FAILED), or of one caught between statuses (a runner cancels it once it is back in
    its queue). The row goes with the FAILED, or once the invocation finished first.
    One per invocation: the first request's reason and requester are kept."""

    invocation_id = id_field()
    reason = models.TextField(blank=True, default="")
    requested_by = id_field()
    requested_at = models.DateTimeField()
    #: Kill the worker running it; otherwise only cancel it if it is back in its queue.
    terminate = models.BooleanField(default=False)

    class Meta:
        db_table = "pynenc_revoke_request"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "invocation_id"], name="pynenc_revoke_request_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"revoke {self.invocation_id} (by {self.requested_by})"


class AtomicServiceStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    ABANDONED = "abandoned", "Abandoned"
    BLOCKED = "blocked", "Blocked"


class AtomicServiceExecution(AppScopedModel):
    """One attempt of a runner to run the cluster-wide atomic services.

    BLOCKED rows are zero-width and say in ``reason`` who held the slot; ABANDONED rows
    were finalized by the runner itself after an error, or by the reaper when their
    runner died while RUNNING.
    """

    run_id = id_field()
    runner_id = id_field()
    status = models.CharField(max_length=16, choices=AtomicServiceStatus.choices)
    reason = models.TextField(blank=True, default="")
    start_time = models.DateTimeField()
    end_time = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "pynenc_atomic_service_execution"
        constraints = [
            models.UniqueConstraint(fields=["app_id", "run_id"], name="pynenc_atomic_run_uniq")
        ]
        indexes = [
            models.Index(
                fields=["app_id", "status", "start_time"], name="pynenc_atomic_status_idx"
            ),
            models.Index(fields=["app_id", "start_time"], name="pynenc_atomic_start_idx"),
            models.Index(fields=["app_id", "end_time"], name="pynenc_atomic_end_idx"),
            models.Index(fields=["app_id", "runner_id"], name="pynenc_atomic_runner_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} [{self.status}]"


class AtomicServiceGate(models.Model):
    """The per-app mutual-exclusion slot behind ``record_atomic_service_execution_start``.

    A conditional unique index would do on PostgreSQL and SQLite, but Django silently
    skips those on MariaDB/MySQL, so the gate is one row per app claimed with a
    compare-and-set ``UPDATE ... WHERE running_run_id IS NULL``: at most one writer can
    win on every database.
    """

    app_id = models.CharField(max_length=APP_ID_LENGTH, primary_key=True)
    running_run_id = id_field(null=True, blank=True)
    runner_id = id_field(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # When the last run was admitted: DjangoPersistentProcessRunner's runners admit one
    # run per ``django_atomic_service_every_sec`` cluster-wide (a compare-and-set on it).
    last_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "pynenc_atomic_service_gate"

    def __str__(self) -> str:
        return f"{self.app_id}: {self.running_run_id or 'free'}"
