"""State backend models: what pynenc remembers about invocations for results and monitoring.

One table per kind of record, all shared by every app and keyed by ``app_id`` first.
Serialized values (arguments, results, exceptions, workflow data, app info) are
``TextField`` because they can be megabytes and are never searched.
"""

from django.db import models

from pynenc_django.models.base import (
    KEY_LENGTH,
    RUNNER_NAME_LENGTH,
    STATUS_LENGTH,
    AppScopedModel,
    id_field,
)
from pynenc_django.models.indexes import NotNullIndex

__all__ = [
    "AppInfoRecord",
    "InvocationException",
    "InvocationHistory",
    "InvocationResult",
    "RunnerContextRecord",
    "StateInvocation",
    "WorkflowData",
    "WorkflowRun",
    "WorkflowSubInvocation",
]

# Workflow data keys are user-chosen; 255 keeps (app_id, workflow_id, data_key) at
# 765 characters, inside InnoDB's 3,072-byte index limit with utf8mb4.
DATA_KEY_LENGTH = 255
RUNNER_CLS_LENGTH = 255
HOSTNAME_LENGTH = 255


class StateInvocation(AppScopedModel):
    """An invocation and its call, enough to rebuild a ``DistributedInvocation``."""

    invocation_id = id_field()
    call_id_key = models.CharField(max_length=KEY_LENGTH)
    task_id_key = models.CharField(max_length=KEY_LENGTH)
    arguments_id = id_field()
    # JSON object {argument name: serialized value or client-data key}; "{}" when none.
    serialized_arguments = models.TextField()
    parent_invocation_id = id_field(null=True, blank=True)
    parent_event_id = id_field(null=True, blank=True)
    workflow_id = id_field(null=True, blank=True)
    workflow_type_key = models.CharField(max_length=KEY_LENGTH, null=True, blank=True)
    parent_workflow_id = id_field(null=True, blank=True)
    # Set on first insert only: re-upserting an invocation never moves it in time.
    registered_at = models.DateTimeField()
    # JSON of what its call asked beyond the task's defaults (queue, priority, expiry:
    # pynenc_django.calling.options.CallOptions.stored); written on first insert only.
    call_options = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "pynenc_state_invocation"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "invocation_id"], name="pynenc_state_inv_uniq"
            )
        ]
        indexes = [
            # NULL for a top-level call: such rows are left out (NotNullIndex).
            NotNullIndex(
                fields=["app_id", "parent_invocation_id"],
                name="pynenc_state_inv_parent_idx",
                not_null="parent_invocation_id",
            ),
            NotNullIndex(
                fields=["app_id", "parent_event_id"],
                name="pynenc_state_inv_event_idx",
                not_null="parent_event_id",
            ),
            NotNullIndex(
                fields=["app_id", "workflow_id"],
                name="pynenc_state_inv_wf_idx",
                not_null="workflow_id",
            ),
            NotNullIndex(
                fields=["app_id", "workflow_type_key"],
                name="pynenc_state_inv_wftype_idx",
                not_null="workflow_type_key",
            ),
        ]

    def __str__(self) -> str:
        return self.invocation_id


class InvocationHistory(AppScopedModel):
    """One status change of an invocation; an invocation has many, ordered by time."""

    invocation_id = id_field()
    timestamp = models.DateTimeField()
    status = models.CharField(max_length=STATUS_LENGTH)
    status_runner_id = id_field(null=True, blank=True)
    status_timestamp = models.DateTimeField()
    runner_context_id = id_field()
    registered_by_inv_id = id_field(null=True, blank=True)

    class Meta:
        db_table = "pynenc_state_history"
        verbose_name_plural = "invocation histories"
        constraints = [
            # Also the (app_id, invocation_id, timestamp) index for per-invocation reads;
            # makes a retried insert of the same record a no-op.
            models.UniqueConstraint(
                fields=["app_id", "invocation_id", "timestamp", "status"],
                name="pynenc_state_hist_uniq",
            )
        ]
        indexes = [
            # Time-range scans page by (timestamp, id).
            models.Index(fields=["app_id", "timestamp", "id"], name="pynenc_state_hist_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.invocation_id} [{self.status}] @ {self.timestamp.isoformat()}"


class InvocationResult(AppScopedModel):
    """The serialized result (inline or a client-data key) of a successful invocation."""

    invocation_id = id_field()
    result = models.TextField()

    class Meta:
        db_table = "pynenc_state_result"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "invocation_id"], name="pynenc_state_result_uniq"
            )
        ]

    def __str__(self) -> str:
        return self.invocation_id


class InvocationException(AppScopedModel):
    """The serialized exception envelope of a failed invocation."""

    invocation_id = id_field()
    exception = models.TextField()

    class Meta:
        db_table = "pynenc_state_exception"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "invocation_id"], name="pynenc_state_exc_uniq"
            )
        ]

    def __str__(self) -> str:
        return self.invocation_id


class RunnerContextRecord(AppScopedModel):
    """Where a runner (or worker/thread within it) runs; nested through ``parent_runner_id``."""

    runner_id = id_field()
    runner_cls = models.CharField(max_length=RUNNER_CLS_LENGTH)
    parent_runner_id = id_field(null=True, blank=True)
    pid = models.BigIntegerField()
    hostname = models.CharField(max_length=HOSTNAME_LENGTH)
    # Thread idents are pointer-sized, far beyond a 32-bit integer.
    thread_id = models.BigIntegerField()
    #: The runner's name (``pynenc_runner --name``): kept here because a runner that stops
    #: cleanly drops its heartbeats, and the admin still names it in what it did.
    name = models.CharField(max_length=RUNNER_NAME_LENGTH, blank=True, default="", db_default="")

    class Meta:
        db_table = "pynenc_state_runner_context"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "runner_id"], name="pynenc_state_runner_ctx_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.runner_cls}({self.runner_id})"


class WorkflowRun(AppScopedModel):
    """One run of a workflow; its type is the task id of the workflow's root task."""

    workflow_id = id_field()
    workflow_type_key = models.CharField(max_length=KEY_LENGTH)
    parent_workflow_id = id_field(null=True, blank=True)

    class Meta:
        db_table = "pynenc_state_workflow"
        constraints = [
            models.UniqueConstraint(fields=["app_id", "workflow_id"], name="pynenc_state_wf_uniq")
        ]
        indexes = [
            models.Index(fields=["app_id", "workflow_type_key"], name="pynenc_state_wf_type_idx")
        ]

    def __str__(self) -> str:
        return f"{self.workflow_type_key}:{self.workflow_id}"


class WorkflowData(AppScopedModel):
    """A key/value pair of a workflow's deterministic-replay state."""

    workflow_id = id_field()
    data_key = models.CharField(max_length=DATA_KEY_LENGTH)
    data_value = models.TextField()

    class Meta:
        db_table = "pynenc_state_workflow_data"
        verbose_name_plural = "workflow data"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "workflow_id", "data_key"], name="pynenc_state_wf_data_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id}.{self.data_key}"


class WorkflowSubInvocation(AppScopedModel):
    """An invocation (task or sub-workflow) that ran inside a workflow; a set per workflow."""

    parent_workflow_id = id_field()
    sub_invocation_id = id_field()

    class Meta:
        db_table = "pynenc_state_workflow_sub_inv"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "parent_workflow_id", "sub_invocation_id"],
                name="pynenc_state_wf_sub_uniq",
            )
        ]

    def __str__(self) -> str:
        return f"{self.parent_workflow_id} > {self.sub_invocation_id}"


class AppInfoRecord(AppScopedModel):
    """How to re-instantiate an app (module, config), read by pynmon's app discovery."""

    app_info_json = models.TextField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "pynenc_state_app_info"
        verbose_name = "app info"
        verbose_name_plural = "app info"
        constraints = [
            models.UniqueConstraint(fields=["app_id"], name="pynenc_state_app_info_uniq")
        ]

    def __str__(self) -> str:
        return self.app_id
