"""Trigger models: conditions, trigger definitions, cron state, run claims and the
event / trigger-run monitoring records.

Condition ids and valid-condition ids are built by pynenc from task keys, argument
filters, exception names and context ids, so they have no length bound. They are kept in
full in ``TextField`` columns and keyed by their SHA-256 (``*_key``, 64 hex characters),
which keeps every composite index inside InnoDB's 3,072-byte limit with utf8mb4.
"""

from typing import Any

from django.db import models

from pynenc_django.models.base import KEY_LENGTH, AppScopedModel, id_field

__all__ = [
    "EventConditionMatch",
    "EventEntry",
    "EventTriggeredInvocation",
    "TriggerConditionEntry",
    "TriggerConditionLink",
    "TriggerDefinitionEntry",
    "TriggerRunClaim",
    "TriggerRunCondition",
    "TriggerRunEntry",
    "TriggerSourceTaskCondition",
    "TriggerValidCondition",
]

HASH_LENGTH = 64  # sha256 hex digest of an unbounded pynenc id
CONTEXT_TYPE_LENGTH = 100  # name of a ConditionContext class
EVENT_CODE_LENGTH = 255
LOGIC_LENGTH = 16


def hash_field(**kwargs: Any) -> models.CharField:
    return models.CharField(max_length=HASH_LENGTH, **kwargs)


class TriggerConditionEntry(AppScopedModel):
    """A registered condition and, for cron conditions, when it last fired.

    Re-registering a condition updates only its JSON: ``last_cron_execution`` is cron
    state shared by every runner and must survive process restarts.
    """

    condition_key = hash_field()
    condition_id = models.TextField()
    # ``condition.context_type.__name__``: lets lookups filter by context in SQL.
    context_type = models.CharField(max_length=CONTEXT_TYPE_LENGTH)
    condition_json = models.TextField()
    last_cron_execution = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "trigger condition"
        verbose_name_plural = "trigger conditions"
        db_table = "pynenc_trigger_condition"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "condition_key"], name="pynenc_trg_condition_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["app_id", "context_type"], name="pynenc_trg_cond_ctx_idx"),
        ]

    def __str__(self) -> str:
        return self.condition_id


class TriggerDefinitionEntry(AppScopedModel):
    """A trigger: run ``task_id_key`` when its conditions (see the links) are met."""

    trigger_id = id_field()
    task_id_key = models.CharField(max_length=KEY_LENGTH)
    logic_value = models.CharField(max_length=LOGIC_LENGTH)
    argument_provider_json = models.TextField(null=True, blank=True)

    class Meta:
        verbose_name = "trigger definition"
        verbose_name_plural = "trigger definitions"
        db_table = "pynenc_trigger_definition"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "trigger_id"], name="pynenc_trg_definition_uniq"
            )
        ]
        indexes = [
            # clean_task_trigger_definitions runs per task on every runner start.
            models.Index(fields=["app_id", "task_id_key"], name="pynenc_trg_def_task_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.trigger_id} -> {self.task_id_key}"


class TriggerConditionLink(AppScopedModel):
    """Condition ↔ trigger; ``position`` keeps the definition's condition order."""

    condition_key = hash_field()
    condition_id = models.TextField()
    trigger_id = id_field()
    position = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "pynenc_trigger_condition_link"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "condition_key", "trigger_id"], name="pynenc_trg_link_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["app_id", "trigger_id"], name="pynenc_trg_link_trigger_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.condition_id} -> {self.trigger_id}"


class TriggerValidCondition(AppScopedModel):
    """A condition satisfied by a context, waiting for the trigger loop to consume it."""

    valid_condition_key = hash_field()
    valid_condition_id = models.TextField()
    valid_condition_json = models.TextField()

    class Meta:
        db_table = "pynenc_trigger_valid_condition"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "valid_condition_key"], name="pynenc_trg_valid_uniq"
            )
        ]

    def __str__(self) -> str:
        return self.valid_condition_id


class TriggerSourceTaskCondition(AppScopedModel):
    """Task → conditions watching it; read on every status change of that task."""

    task_id_key = models.CharField(max_length=KEY_LENGTH)
    condition_key = hash_field()

    class Meta:
        db_table = "pynenc_trigger_source_task_condition"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "task_id_key", "condition_key"],
                name="pynenc_trg_source_uniq",
            )
        ]

    def __str__(self) -> str:
        return f"{self.task_id_key} -> {self.condition_key}"


class TriggerRunClaim(AppScopedModel):
    """Who may execute a trigger run, until ``expiration``; expired rows are pruned."""

    trigger_run_id = id_field()
    expiration = models.DateTimeField()
    # Random per claim attempt: a retried claim recognises its own committed row.
    claim_token = models.CharField(max_length=32)

    class Meta:
        db_table = "pynenc_trigger_run_claim"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "trigger_run_id"], name="pynenc_trg_claim_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["app_id", "expiration"], name="pynenc_trg_claim_exp_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.trigger_run_id} until {self.expiration}"


class EventEntry(AppScopedModel):
    """One emitted event (monitoring record); the payload lives in ``event_json``.

    ``triggered_invocation_count`` mirrors the number of ``EventTriggeredInvocation``
    rows; it is only ever incremented together with an inserted link.
    """

    event_id = id_field()
    event_code = models.CharField(max_length=EVENT_CODE_LENGTH)
    timestamp = models.DateTimeField()
    event_json = models.TextField()
    matched_condition_count = models.PositiveIntegerField(default=0)
    triggered_invocation_count = models.PositiveIntegerField(default=0)
    emitted_by_invocation_id = id_field(null=True, blank=True)
    emitted_by_task_id = models.CharField(max_length=KEY_LENGTH, null=True, blank=True)
    emitted_by_runner_context_id = id_field(null=True, blank=True)

    class Meta:
        db_table = "pynenc_event_entry"
        verbose_name_plural = "event entries"
        constraints = [
            models.UniqueConstraint(fields=["app_id", "event_id"], name="pynenc_trg_event_uniq")
        ]
        indexes = [
            models.Index(
                fields=["app_id", "event_code", "timestamp"], name="pynenc_trg_event_code_idx"
            ),
            models.Index(fields=["app_id", "timestamp"], name="pynenc_trg_event_time_idx"),
            models.Index(
                fields=["app_id", "emitted_by_invocation_id"], name="pynenc_trg_event_emit_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_code} {self.event_id}"


class EventConditionMatch(AppScopedModel):
    """An event condition that accepted an event."""

    event_id = id_field()
    condition_key = hash_field()
    condition_id = models.TextField()
    valid_condition_id = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "pynenc_event_condition_match"
        verbose_name_plural = "event condition matches"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "event_id", "condition_key"], name="pynenc_trg_evcond_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["app_id", "condition_key"], name="pynenc_trg_evcond_cond_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} matched {self.condition_id}"


class EventTriggeredInvocation(AppScopedModel):
    """Event → invocation created from it; one row per pair, ordered by ``linked_at``."""

    event_id = id_field()
    invocation_id = id_field()
    trigger_run_id = id_field(null=True, blank=True)
    linked_at = models.DateTimeField()

    class Meta:
        db_table = "pynenc_event_triggered_invocation"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "event_id", "invocation_id"], name="pynenc_trg_evinv_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["app_id", "invocation_id"], name="pynenc_trg_evinv_inv_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.invocation_id}"


class TriggerRunEntry(AppScopedModel):
    """One executed trigger run (monitoring record); the full record is ``trigger_run_json``."""

    trigger_run_id = id_field()
    trigger_id = id_field()
    task_id_key = models.CharField(max_length=KEY_LENGTH)
    logic_value = models.CharField(max_length=LOGIC_LENGTH)
    claimed_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    triggered_invocation_id = id_field(null=True, blank=True)
    # Lets atomic-service purges find referenced runs without decoding every record.
    atomic_service_run_id = id_field(null=True, blank=True)
    trigger_run_json = models.TextField()

    class Meta:
        verbose_name = "trigger run"
        verbose_name_plural = "trigger runs"
        db_table = "pynenc_trigger_run"
        constraints = [
            models.UniqueConstraint(fields=["app_id", "trigger_run_id"], name="pynenc_trg_run_uniq")
        ]
        indexes = [
            models.Index(fields=["app_id", "executed_at"], name="pynenc_trg_run_exec_idx"),
            models.Index(
                fields=["app_id", "task_id_key", "executed_at"], name="pynenc_trg_run_task_idx"
            ),
            models.Index(
                fields=["app_id", "triggered_invocation_id"], name="pynenc_trg_run_inv_idx"
            ),
            models.Index(fields=["app_id", "atomic_service_run_id"], name="pynenc_trg_run_asr_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.trigger_run_id} -> {self.triggered_invocation_id}"


class TriggerRunCondition(AppScopedModel):
    """A participant of a trigger run: what made it fire (event, source invocation, ...).

    Keeps the run ↔ event / source-invocation / valid-condition relations queryable
    without decoding run records.
    """

    trigger_run_id = id_field()
    context_type = models.CharField(max_length=CONTEXT_TYPE_LENGTH, null=True, blank=True)
    condition_id = models.TextField(null=True, blank=True)
    valid_condition_key = hash_field(null=True, blank=True)
    valid_condition_id = models.TextField(null=True, blank=True)
    event_id = id_field(null=True, blank=True)
    source_invocation_id = id_field(null=True, blank=True)

    class Meta:
        db_table = "pynenc_trigger_run_condition"
        indexes = [
            models.Index(fields=["app_id", "trigger_run_id"], name="pynenc_trg_runc_run_idx"),
            models.Index(fields=["app_id", "event_id"], name="pynenc_trg_runc_event_idx"),
            models.Index(fields=["app_id", "source_invocation_id"], name="pynenc_trg_runc_src_idx"),
            models.Index(
                fields=["app_id", "valid_condition_key"], name="pynenc_trg_runc_valid_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trigger_run_id} ({self.context_type})"
