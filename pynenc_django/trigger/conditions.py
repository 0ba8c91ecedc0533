"""Trigger conditions: the condition rows (registered by every runner on start, so an
upsert that never touches their cron state), the source-task index saying which conditions
watch a task (read on every status change, result and failure, so cached per process and
answered in one query), pynenc's report hooks that read it, and the valid conditions the
trigger loop has still to process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pynenc.identifiers.task_id import TaskId
from pynenc.trigger.conditions import (
    EventCondition,
    EventContext,
    ExceptionContext,
    ResultContext,
    StatusContext,
    TriggerCondition,
    ValidCondition,
)

from pynenc_django.db import retry_transient
from pynenc_django.trigger.core import TriggerCore, id_key
from pynenc_django.utils import chunked
from pynenc_django.wakeup.triggers import announce_trigger_work

if TYPE_CHECKING:
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.invocation.status import InvocationStatus
    from pynenc.trigger.conditions import ConditionContext


class ConditionsMixin(TriggerCore):
    """Part of :class:`~pynenc_django.trigger.DjangoTrigger`; see the module docstring."""

    # ------------------------------------------------------------------ #
    # Conditions
    # ------------------------------------------------------------------ #

    @retry_transient
    def _register_condition(self, condition: TriggerCondition) -> None:
        from pynenc_django.models import TriggerConditionEntry

        self._sourced = None
        condition_id = condition.condition_id
        self._upsert(
            TriggerConditionEntry,
            [
                TriggerConditionEntry(
                    app_id=self.app.app_id,
                    condition_key=id_key(condition_id),
                    condition_id=condition_id,
                    context_type=condition.context_type.__name__,
                    condition_json=condition.to_json(self.app),
                )
            ],
            unique_fields=["app_id", "condition_key"],
            # Never last_cron_execution: every runner start re-registers its conditions.
            update_fields=["condition_json", "context_type"],
        )

    @retry_transient
    def get_condition(self, condition_id: str) -> TriggerCondition | None:
        from pynenc_django.models import TriggerConditionEntry

        condition_json = (
            self._rows(TriggerConditionEntry)
            .filter(condition_key=id_key(condition_id))
            .values_list("condition_json", flat=True)
            .first()
        )
        if condition_json is None:
            return None
        return TriggerCondition.from_json(condition_json, self.app)

    @retry_transient
    def get_conditions_batch(
        self, condition_ids: Sequence[str]
    ) -> dict[str, TriggerCondition | None]:
        from pynenc_django.models import TriggerConditionEntry

        found: dict[str, TriggerCondition | None] = dict.fromkeys(condition_ids)
        keys = {id_key(cid): cid for cid in found}
        for chunk in chunked(list(keys)):
            rows = (
                self._rows(TriggerConditionEntry)
                .filter(condition_key__in=chunk)
                .values_list("condition_key", "condition_json")
            )
            for key, condition_json in rows:
                found[keys[key]] = TriggerCondition.from_json(condition_json, self.app)
        return found

    @retry_transient
    def _get_all_conditions(self) -> list[TriggerCondition]:
        from pynenc_django.models import TriggerConditionEntry

        rows = (
            self._rows(TriggerConditionEntry)
            .order_by("id")
            .values_list("condition_json", flat=True)
        )
        return [TriggerCondition.from_json(row, self.app) for row in rows]

    @retry_transient
    def _event_conditions_for(self, event_code: str) -> list[EventCondition]:
        """Runs on every ``emit_event``: decode event conditions only, not all of them."""
        from pynenc_django.models import TriggerConditionEntry

        rows = (
            self._rows(TriggerConditionEntry)
            .filter(context_type=EventContext.__name__)
            .order_by("id")
            .values_list("condition_json", flat=True)
        )
        conditions = (TriggerCondition.from_json(row, self.app) for row in rows)
        return [
            c for c in conditions if isinstance(c, EventCondition) and c.event_code == event_code
        ]

    # ------------------------------------------------------------------ #
    # Source-task index
    # ------------------------------------------------------------------ #

    @retry_transient
    def _register_source_task_condition(self, task_id: TaskId, condition_id: str) -> None:
        from pynenc_django.models import TriggerSourceTaskCondition

        self._sourced = None
        TriggerSourceTaskCondition.objects.using(self.db_alias).bulk_create(
            [
                TriggerSourceTaskCondition(
                    app_id=self.app.app_id,
                    task_id_key=task_id.key,
                    condition_key=id_key(condition_id),
                )
            ],
            ignore_conflicts=True,
        )

    def get_conditions_sourced_from_task(
        self, task_id: TaskId, context_type: type[ConditionContext] | None = None
    ) -> list[TriggerCondition]:
        """Runs on every status change, result and failure: answered from one look at every
        task's conditions, reused for ``django_conditions_cache_sec`` (most tasks are watched
        by nothing). One query per process and period, whatever the tasks and contexts
        asked for: a worker running a task now and then no longer pays a query for each of
        its status, result and failure lookups."""
        ttl = float(self.conf.django_conditions_cache_sec)
        if ttl <= 0:
            by_task = self._sourced_conditions(task_id.key)
        else:
            now = time.monotonic()
            if self._sourced is None or self._sourced[0] <= now:
                self._sourced = (now + ttl, self._sourced_conditions())
            by_task = self._sourced[1]
        return [
            c
            for c in by_task.get(task_id.key, ())
            if context_type is None or c.context_type == context_type
        ]

    @retry_transient
    def _sourced_conditions(self, task_key: str | None = None) -> dict[str, list[TriggerCondition]]:
        """Every watched task's conditions (or ``task_key``'s only), in registration order:
        one query (each source-task row with its condition's row, by their unique keys)."""
        from django.db.models import OuterRef, Subquery

        from pynenc_django.models import TriggerConditionEntry, TriggerSourceTaskCondition

        entry = self._rows(TriggerConditionEntry).filter(condition_key=OuterRef("condition_key"))
        sources = self._rows(TriggerSourceTaskCondition)
        if task_key is not None:
            sources = sources.filter(task_id_key=task_key)
        rows = (
            sources.annotate(
                entry_id=Subquery(entry.values("id")[:1]),
                condition_json=Subquery(entry.values("condition_json")[:1]),
            )
            .filter(entry_id__isnull=False)
            .order_by("entry_id")
            .values_list("task_id_key", "condition_json")
        )
        parsed: dict[str, TriggerCondition] = {}
        by_task: dict[str, list[TriggerCondition]] = {}
        for key, condition_json in rows:
            if (condition := parsed.get(condition_json)) is None:
                condition = parsed[condition_json] = TriggerCondition.from_json(
                    condition_json, self.app
                )
            by_task.setdefault(key, []).append(condition)
        return by_task

    def report_tasks_status(
        self, invocation_ids: list[InvocationId], status: InvocationStatus | None = None
    ) -> None:
        """pynenc's, but the context (which decodes the arguments) only for watched tasks."""
        pairs: list[tuple[TriggerCondition, ConditionContext]] = []
        for invocation_id in invocation_ids:
            invocation = self.app.state_backend.get_invocation(invocation_id)
            conditions = self.get_conditions_sourced_from_task(
                invocation.call.call_id.task_id, StatusContext
            )
            if conditions:
                context = StatusContext.from_invocation(invocation, status)
                pairs.extend((condition, context) for condition in conditions)
        if pairs:
            self.validate_and_record_conditions(pairs)

    def report_invocation_result(self, invocation: DistributedInvocation, result: Any) -> None:
        """pynenc's, without reading the status back for a task nothing watches."""
        if self.get_conditions_sourced_from_task(invocation.call.call_id.task_id, ResultContext):
            super().report_invocation_result(invocation, result)

    def report_invocation_failure(
        self, invocation: DistributedInvocation, exception: Exception
    ) -> None:
        """pynenc's, without reading the status back for a task nothing watches."""
        if self.get_conditions_sourced_from_task(invocation.call.call_id.task_id, ExceptionContext):
            super().report_invocation_failure(invocation, exception)

    # ------------------------------------------------------------------ #
    # Valid conditions
    # ------------------------------------------------------------------ #

    def record_valid_condition(self, valid_condition: ValidCondition) -> None:
        self.record_valid_conditions([valid_condition])

    @retry_transient
    def record_valid_conditions(self, valid_conditions: list[ValidCondition]) -> None:
        from pynenc_django.models import TriggerValidCondition

        # One row per id (last wins): a bulk upsert may not touch the same row twice.
        latest = {vc.valid_condition_id: vc for vc in valid_conditions}
        self._upsert(
            TriggerValidCondition,
            [
                TriggerValidCondition(
                    app_id=self.app.app_id,
                    valid_condition_key=id_key(vc_id),
                    valid_condition_id=vc_id,
                    valid_condition_json=vc.to_json(self.app),
                )
                for vc_id, vc in latest.items()
            ],
            unique_fields=["app_id", "valid_condition_key"],
            update_fields=["valid_condition_json"],
        )
        if latest and not self._in_turn and self.conf.django_listen_notify:
            announce_trigger_work(self.db_alias, self.app.app_id)

    @retry_transient
    def get_valid_conditions(self) -> dict[str, ValidCondition]:
        from pynenc_django.models import TriggerValidCondition

        rows = (
            self._rows(TriggerValidCondition)
            .order_by("id")
            .values_list("valid_condition_id", "valid_condition_json")
        )
        return {vc_id: ValidCondition.from_json(vc_json, self.app) for vc_id, vc_json in rows}

    @retry_transient
    def clear_valid_conditions(self, conditions: Iterable[ValidCondition]) -> None:
        from pynenc_django.models import TriggerValidCondition

        keys = list(dict.fromkeys(id_key(vc.valid_condition_id) for vc in conditions))
        for chunk in chunked(keys):
            self._rows(TriggerValidCondition).filter(valid_condition_key__in=chunk).delete()
