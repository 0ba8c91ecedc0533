"""Trigger on the Django ORM: conditions, trigger definitions, cron state, run claims and
the event / trigger-run monitoring records.

Unlike pynenc's SQLite reference, every guarantee the trigger loop relies on is enforced
by the database itself, so it holds across processes and hosts:

* ``store_last_cron_execution`` is a compare-and-set (one conditional ``UPDATE``), and
  re-registering a condition never resets its cron state;
* ``claim_trigger_run`` is decided by a unique key (first insert wins) and by a
  conditional ``UPDATE`` that only takes over an expired claim;
* ``link_trigger_run_to_events`` bumps an event's triggered count only when it inserts a
  new (event, invocation) link, in the same transaction.

The lookups that run on hot paths (conditions watching a task on every status change,
runs referencing an atomic-service run on every atomic-service purge) are single indexed
queries.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.conf.validation_trigger import validate_trigger_config
from pynenc.identifiers.task_id import TaskId
from pynenc.models.trigger_definition_dto import TriggerDefinitionDTO
from pynenc.trigger.base_trigger import BaseTrigger
from pynenc.trigger.conditions import (
    CompositeLogic,
    EventCondition,
    EventContext,
    ExceptionContext,
    ResultContext,
    StatusContext,
    TriggerCondition,
    ValidCondition,
)
from pynenc.trigger.monitoring import (
    EventMarker,
    EventMarkerPage,
    EventRecord,
    TriggerRunRecord,
)
from pynenc.trigger.trigger_definitions import TriggerDefinition

from pynenc_django.conf import ConfigTriggerDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django, retry_transient
from pynenc_django.utils import chunked, from_db_time, now_utc, sha256_hex, to_db_time

if TYPE_CHECKING:
    from django.db.models import Model, QuerySet
    from pynenc.app import Pynenc
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.invocation.status import InvocationStatus
    from pynenc.trigger.conditions import ConditionContext

    from pynenc_django.models import TriggerRunCondition

# Expired run claims are equivalent to no claim; delete them at most this often per process.
CLAIM_PRUNE_INTERVAL_SEC = 60.0
# A claim attempt retries when the expired row it wanted to take over was pruned meanwhile.
CLAIM_ATTEMPTS = 3

id_key = sha256_hex  # fixed-length key for pynenc ids with no length bound (condition ids)


class DjangoTrigger(DjangoBackendMixin, BaseTrigger):
    """pynenc's trigger component stored in the project's database, scoped by ``app_id``."""

    def __init__(self, app: Pynenc) -> None:
        ensure_django()
        super().__init__(app)
        self._next_claim_prune = 0.0
        # (task key, context type) -> (expires at, conditions); see get_conditions_sourced_from_task
        self._sourced_cache: dict[tuple[str, str], tuple[float, list[TriggerCondition]]] = {}

    @cached_property
    def conf(self) -> ConfigTriggerDjango:
        config = ConfigTriggerDjango(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )
        validate_trigger_config(config)
        return config

    # ------------------------------------------------------------------ #
    # Helpers
    # ------------------------------------------------------------------ #

    def _rows(self, model: type[Model]) -> Any:
        """Every query starts here: right database, this app's rows only."""
        return model.objects.using(self.db_alias).for_app(self.app.app_id)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ #
    # Conditions and trigger definitions
    # ------------------------------------------------------------------ #

    @retry_transient
    def _register_condition(self, condition: TriggerCondition) -> None:
        from pynenc_django.models import TriggerConditionEntry

        self._sourced_cache.clear()
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

    @retry_transient
    def register_trigger(self, trigger: TriggerDefinitionDTO) -> None:
        from pynenc_django.models import TriggerConditionLink, TriggerDefinitionEntry

        app_id = self.app.app_id
        condition_ids = list(dict.fromkeys(trigger.condition_ids))
        keys = [id_key(cid) for cid in condition_ids]
        with self.write_transaction():
            self._upsert(
                TriggerDefinitionEntry,
                [
                    TriggerDefinitionEntry(
                        app_id=app_id,
                        trigger_id=trigger.trigger_id,
                        task_id_key=trigger.task_id.key,
                        logic_value=trigger.logic.value,
                        argument_provider_json=trigger.argument_provider_json,
                    )
                ],
                unique_fields=["app_id", "trigger_id"],
                update_fields=["task_id_key", "logic_value", "argument_provider_json"],
            )
            links = self._rows(TriggerConditionLink).filter(trigger_id=trigger.trigger_id)
            links.exclude(condition_key__in=keys).delete()
            # Idempotent, so runners registering the same trigger at once never collide.
            TriggerConditionLink.objects.using(self.db_alias).bulk_create(
                [
                    TriggerConditionLink(
                        app_id=app_id,
                        condition_key=key,
                        condition_id=condition_id,
                        trigger_id=trigger.trigger_id,
                        position=position,
                    )
                    for position, (key, condition_id) in enumerate(
                        zip(keys, condition_ids, strict=True)
                    )
                ],
                ignore_conflicts=True,
            )

    def _load_trigger_dtos(self, definitions: QuerySet[Any]) -> list[TriggerDefinitionDTO]:
        """Two queries whatever the number of triggers: definitions, then their links."""
        from pynenc_django.models import TriggerConditionLink

        rows = list(
            definitions.order_by("id").values_list(
                "trigger_id", "task_id_key", "logic_value", "argument_provider_json"
            )
        )
        if not rows:
            return []
        condition_ids: dict[str, list[str]] = defaultdict(list)
        for chunk in chunked([row[0] for row in rows]):
            links = (
                self._rows(TriggerConditionLink)
                .filter(trigger_id__in=chunk)
                .order_by("trigger_id", "position", "id")
                .values_list("trigger_id", "condition_id")
            )
            for trigger_id, condition_id in links:
                condition_ids[trigger_id].append(condition_id)
        return [
            TriggerDefinitionDTO(
                trigger_id=trigger_id,
                task_id=TaskId.from_key(task_id_key),
                condition_ids=condition_ids[trigger_id],
                logic=CompositeLogic(logic_value),
                argument_provider_json=argument_provider_json,
            )
            for trigger_id, task_id_key, logic_value, argument_provider_json in rows
        ]

    def _get_triggers(self, trigger_ids: Sequence[str]) -> dict[str, TriggerDefinitionDTO]:
        from pynenc_django.models import TriggerDefinitionEntry

        found: dict[str, TriggerDefinitionDTO] = {}
        for chunk in chunked(list(dict.fromkeys(trigger_ids))):
            definitions = self._rows(TriggerDefinitionEntry).filter(trigger_id__in=chunk)
            found.update((dto.trigger_id, dto) for dto in self._load_trigger_dtos(definitions))
        return found

    @retry_transient
    def _get_trigger(self, trigger_id: str) -> TriggerDefinitionDTO | None:
        return self._get_triggers([trigger_id]).get(trigger_id)

    @retry_transient
    def get_triggers_batch(self, trigger_ids: Sequence[str]) -> dict[str, TriggerDefinition | None]:
        dtos = self._get_triggers(trigger_ids)
        return {
            tid: TriggerDefinition.from_dto(dtos[tid], self.app) if tid in dtos else None
            for tid in trigger_ids
        }

    @retry_transient
    def get_triggers_for_condition(self, condition_id: str) -> list[TriggerDefinitionDTO]:
        from pynenc_django.models import TriggerConditionLink, TriggerDefinitionEntry

        trigger_ids = self._rows(TriggerConditionLink).filter(condition_key=id_key(condition_id))
        definitions = self._rows(TriggerDefinitionEntry).filter(
            trigger_id__in=trigger_ids.values("trigger_id")
        )
        return self._load_trigger_dtos(definitions)

    @retry_transient
    def clean_task_trigger_definitions(self, task_id: TaskId) -> None:
        from pynenc_django.models import TriggerConditionLink, TriggerDefinitionEntry

        self._sourced_cache.clear()
        definitions = self._rows(TriggerDefinitionEntry).filter(task_id_key=task_id.key)
        with self.write_transaction():
            self._rows(TriggerConditionLink).filter(
                trigger_id__in=definitions.values("trigger_id")
            ).delete()
            definitions.delete()

    # ------------------------------------------------------------------ #
    # Source-task index
    # ------------------------------------------------------------------ #

    @retry_transient
    def _register_source_task_condition(self, task_id: TaskId, condition_id: str) -> None:
        from pynenc_django.models import TriggerSourceTaskCondition

        self._sourced_cache.clear()
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
        """Runs on every status change, result and failure: reused for
        ``django_conditions_cache_sec`` (most tasks are watched by nothing)."""
        ttl = float(self.conf.django_conditions_cache_sec)
        if ttl <= 0:
            return self._conditions_sourced_from_task(task_id, context_type)
        key = (task_id.key, context_type.__name__ if context_type else "")
        now = time.monotonic()
        cached = self._sourced_cache.get(key)
        if cached is not None and cached[0] > now:
            return list(cached[1])
        conditions = self._conditions_sourced_from_task(task_id, context_type)
        self._sourced_cache[key] = (now + ttl, conditions)
        return list(conditions)

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

    @retry_transient
    def _conditions_sourced_from_task(
        self, task_id: TaskId, context_type: type[ConditionContext] | None
    ) -> list[TriggerCondition]:
        """One query (conditions ⋉ source-task rows)."""
        from django.db.models import Exists, OuterRef

        from pynenc_django.models import TriggerConditionEntry, TriggerSourceTaskCondition

        watching = TriggerSourceTaskCondition.objects.using(self.db_alias).filter(
            app_id=self.app.app_id,
            task_id_key=task_id.key,
            condition_key=OuterRef("condition_key"),
        )
        rows = self._rows(TriggerConditionEntry).filter(Exists(watching))
        if context_type is not None:
            rows = rows.filter(context_type=context_type.__name__)
        conditions = [
            TriggerCondition.from_json(row, self.app)
            for row in rows.order_by("id").values_list("condition_json", flat=True)
        ]
        if context_type is not None:
            conditions = [c for c in conditions if c.context_type == context_type]
        return conditions

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

    # ------------------------------------------------------------------ #
    # Cron state
    # ------------------------------------------------------------------ #

    @retry_transient
    def get_last_cron_execution(self, condition_id: str) -> datetime | None:
        from pynenc_django.models import TriggerConditionEntry

        value = (
            self._rows(TriggerConditionEntry)
            .filter(condition_key=id_key(condition_id))
            .values_list("last_cron_execution", flat=True)
            .first()
        )
        return from_db_time(value)

    @retry_transient
    def store_last_cron_execution(
        self,
        condition_id: str,
        execution_time: datetime,
        expected_last_execution: datetime | None = None,
    ) -> bool:
        """Compare-and-set: one conditional UPDATE, so exactly one runner wins a tick.

        ``expected_last_execution=None`` means "only if it never ran". An unregistered
        condition has no row to update and returns False.
        """
        from pynenc_django.models import TriggerConditionEntry

        rows = self._rows(TriggerConditionEntry).filter(condition_key=id_key(condition_id))
        if expected_last_execution is None:
            rows = rows.filter(last_cron_execution__isnull=True)
        else:
            rows = rows.filter(last_cron_execution=to_db_time(expected_last_execution))
        return bool(rows.update(last_cron_execution=to_db_time(execution_time)))

    # ------------------------------------------------------------------ #
    # Trigger-run claims
    # ------------------------------------------------------------------ #

    def claim_trigger_run(self, trigger_run_id: str, expiration_seconds: int = 60) -> bool:
        """First claimer wins until the claim expires; then the next claimer takes it over.

        The token is drawn once per call, so a call retried after a lost connection
        recognises the row its first attempt committed.
        """
        self._maybe_prune_claims()
        return self._claim(trigger_run_id, expiration_seconds, secrets.token_hex(16))

    @retry_transient
    def _claim(self, trigger_run_id: str, expiration_seconds: int, token: str) -> bool:
        from django.db import IntegrityError
        from django.db.models import Q

        from pynenc_django.models import TriggerRunClaim

        claims = self._rows(TriggerRunClaim).filter(trigger_run_id=trigger_run_id)
        for _ in range(CLAIM_ATTEMPTS):
            now = now_utc()
            expiration = to_db_time(now + timedelta(seconds=expiration_seconds))
            try:
                # Its own (sub)transaction: a duplicate key must not poison a caller's block,
                # and on MariaDB no lock from the failed insert is held into the update.
                with self.write_transaction():
                    TriggerRunClaim.objects.using(self.db_alias).create(
                        app_id=self.app.app_id,
                        trigger_run_id=trigger_run_id,
                        expiration=expiration,
                        claim_token=token,
                    )
                return True
            except IntegrityError:
                pass
            taken = claims.filter(Q(expiration__lt=to_db_time(now)) | Q(claim_token=token)).update(
                expiration=expiration, claim_token=token
            )
            if taken:
                return True
            if claims.exists():
                return False
            # The expired row was pruned between our insert and update: insert again.
        return False

    def _maybe_prune_claims(self) -> None:
        if time.monotonic() < self._next_claim_prune:
            return
        self._next_claim_prune = time.monotonic() + CLAIM_PRUNE_INTERVAL_SEC
        self._prune_expired_claims()

    @retry_transient
    def _prune_expired_claims(self) -> int:
        """An expired claim allows the same as no claim, so deleting it changes nothing."""
        from pynenc_django.models import TriggerRunClaim

        expired = self._rows(TriggerRunClaim).filter(expiration__lt=to_db_time(now_utc()))
        return int(expired.delete()[0])

    # ------------------------------------------------------------------ #
    # Purge
    # ------------------------------------------------------------------ #

    @retry_transient
    def _purge(self) -> None:
        from pynenc_django.models import trigger as trigger_models

        self._sourced_cache.clear()
        with self.write_transaction():
            for name in trigger_models.__all__:
                self._rows(getattr(trigger_models, name)).delete()

    # ------------------------------------------------------------------ #
    # Events
    # ------------------------------------------------------------------ #

    def _link_event(
        self, event_id: str, invocation_id: str, trigger_run_id: str | None, linked_at: datetime
    ) -> bool:
        """Insert one (event, invocation) link and, only if it is new, count it.

        Must run inside a transaction: the link and the increment commit together. The
        insert's outcome is decided by the unique key, so concurrent linkers of the same
        pair increment the count once.
        """
        from django.db import IntegrityError, transaction
        from django.db.models import F

        from pynenc_django.models import EventEntry, EventTriggeredInvocation

        try:
            with transaction.atomic(using=self.db_alias):
                EventTriggeredInvocation.objects.using(self.db_alias).create(
                    app_id=self.app.app_id,
                    event_id=event_id,
                    invocation_id=invocation_id,
                    trigger_run_id=trigger_run_id,
                    linked_at=linked_at,
                )
        except IntegrityError:
            return False
        self._rows(EventEntry).filter(event_id=event_id).update(
            triggered_invocation_count=F("triggered_invocation_count") + 1
        )
        return True

    @retry_transient
    def store_event(self, event: EventRecord) -> None:
        """Upsert the event and its matches; links it carries are added, never removed."""
        from pynenc_django.models import EventConditionMatch, EventEntry

        app_id = self.app.app_id
        event_json = event.to_json(self.app)  # may write client data: keep it outside
        valid_ids = list(event.valid_condition_ids)
        matches: dict[str, EventConditionMatch] = {}
        for index, condition_id in enumerate(event.matched_condition_ids):
            matches[id_key(condition_id)] = EventConditionMatch(
                app_id=app_id,
                event_id=event.event_id,
                condition_key=id_key(condition_id),
                condition_id=condition_id,
                valid_condition_id=valid_ids[index] if index < len(valid_ids) else None,
            )
        with self.write_transaction():
            self._upsert(
                EventEntry,
                [
                    EventEntry(
                        app_id=app_id,
                        event_id=event.event_id,
                        event_code=event.event_code,
                        timestamp=to_db_time(event.timestamp),
                        event_json=event_json,
                        matched_condition_count=len(event.matched_condition_ids),
                        triggered_invocation_count=0,
                        emitted_by_invocation_id=event.emitted_by_invocation_id,
                        emitted_by_task_id=event.emitted_by_task_id,
                        emitted_by_runner_context_id=event.emitted_by_runner_context_id,
                    )
                ],
                unique_fields=["app_id", "event_id"],
                # Not triggered_invocation_count: it is owned by the link table.
                update_fields=[
                    "event_code",
                    "timestamp",
                    "event_json",
                    "matched_condition_count",
                    "emitted_by_invocation_id",
                    "emitted_by_task_id",
                    "emitted_by_runner_context_id",
                ],
            )
            self._rows(EventConditionMatch).filter(event_id=event.event_id).delete()
            EventConditionMatch.objects.using(self.db_alias).bulk_create(list(matches.values()))
            if event.triggered_invocation_ids:
                linked_at = to_db_time(now_utc())
                for invocation_id in dict.fromkeys(event.triggered_invocation_ids):
                    self._link_event(event.event_id, invocation_id, None, linked_at)

    def _invocations_for_events(self, event_ids: Sequence[str]) -> dict[str, list[str]]:
        from pynenc_django.models import EventTriggeredInvocation

        found: dict[str, list[str]] = {event_id: [] for event_id in event_ids}
        for chunk in chunked(list(found)):
            rows = (
                self._rows(EventTriggeredInvocation)
                .filter(event_id__in=chunk)
                .order_by("linked_at", "id")
                .values_list("event_id", "invocation_id")
            )
            for event_id, invocation_id in rows:
                found[event_id].append(invocation_id)
        return found

    def _decode_events(self, rows: Iterable[tuple[str, str]]) -> list[EventRecord]:
        """Rebuild records, with triggered invocations read from the link table."""
        records = [EventRecord.from_json(event_json, self.app) for _, event_json in rows]
        invocations = self._invocations_for_events([r.event_id for r in records])
        for record in records:
            record.triggered_invocation_ids = invocations.get(record.event_id, [])
        return records

    def get_event(self, event_id: str) -> EventRecord | None:
        return self.get_events_batch([event_id])[event_id]

    @retry_transient
    def get_events_batch(self, event_ids: Sequence[str]) -> dict[str, EventRecord | None]:
        from pynenc_django.models import EventEntry

        found: dict[str, EventRecord | None] = dict.fromkeys(event_ids)
        for chunk in chunked(list(found)):
            rows = (
                self._rows(EventEntry)
                .filter(event_id__in=chunk)
                .values_list("event_id", "event_json")
            )
            for record in self._decode_events(rows):
                found[record.event_id] = record
        return found

    def _filtered_events(
        self,
        event_code: str | None,
        start_time: datetime | None,
        end_time: datetime | None,
        matched: bool | None,
        triggered: bool | None,
        emitted_by_invocation_id: str | None,
        emitted_by_task_id: str | None,
    ) -> Any:
        from pynenc_django.models import EventEntry

        rows = self._rows(EventEntry)
        if event_code is not None:
            rows = rows.filter(event_code=event_code)
        if start_time is not None:
            rows = rows.filter(timestamp__gte=to_db_time(start_time))
        if end_time is not None:
            rows = rows.filter(timestamp__lte=to_db_time(end_time))
        if matched is not None:
            rows = (
                rows.filter(matched_condition_count__gt=0)
                if matched
                else rows.filter(matched_condition_count=0)
            )
        if triggered is not None:
            rows = (
                rows.filter(triggered_invocation_count__gt=0)
                if triggered
                else rows.filter(triggered_invocation_count=0)
            )
        if emitted_by_invocation_id is not None:
            rows = rows.filter(emitted_by_invocation_id=emitted_by_invocation_id)
        if emitted_by_task_id is not None:
            rows = rows.filter(emitted_by_task_id=emitted_by_task_id)
        return rows

    @retry_transient
    def get_events(
        self,
        *,
        event_code: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        matched: bool | None = None,
        triggered: bool | None = None,
        emitted_by_invocation_id: str | None = None,
        emitted_by_task_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRecord]:
        rows = self._filtered_events(
            event_code,
            start_time,
            end_time,
            matched,
            triggered,
            emitted_by_invocation_id,
            emitted_by_task_id,
        )
        page = rows.order_by("-timestamp", "-id").values_list("event_id", "event_json")
        return self._decode_events(page[offset : offset + limit])

    @retry_transient
    def count_events(
        self,
        *,
        event_code: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        matched: bool | None = None,
        triggered: bool | None = None,
        emitted_by_invocation_id: str | None = None,
        emitted_by_task_id: str | None = None,
    ) -> int:
        rows = self._filtered_events(
            event_code,
            start_time,
            end_time,
            matched,
            triggered,
            emitted_by_invocation_id,
            emitted_by_task_id,
        )
        return int(rows.count())

    @retry_transient
    def get_event_markers_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        *,
        event_code: str | None = None,
        state: str = "all",
        limit: int = 1000,
        offset: int = 0,
    ) -> EventMarkerPage:
        rows = self._filtered_events(
            event_code,
            start_time,
            end_time,
            matched={"matched": True, "unmatched": False}.get(state),
            triggered={"triggered": True, "untriggered": False}.get(state),
            emitted_by_invocation_id=None,
            emitted_by_task_id=None,
        )
        total = int(rows.count())
        page = rows.order_by("timestamp", "id").values_list(
            "event_id",
            "event_code",
            "timestamp",
            "matched_condition_count",
            "triggered_invocation_count",
            "emitted_by_invocation_id",
            "emitted_by_runner_context_id",
        )[offset : offset + limit]
        markers = [
            EventMarker(
                event_id=event_id,
                event_code=code,
                timestamp=from_db_time(timestamp),  # type: ignore[arg-type]
                matched=matched > 0,
                triggered=triggered > 0,
                emitted_by_invocation_id=emitted_by,
                emitted_by_runner_context_id=runner_context_id,
            )
            for (
                event_id,
                code,
                timestamp,
                matched,
                triggered,
                emitted_by,
                runner_context_id,
            ) in page
        ]
        return EventMarkerPage(
            markers=markers, total=total, truncated=offset + len(markers) < total
        )

    @retry_transient
    def link_trigger_run_to_events(
        self,
        event_ids: list[str],
        invocation_id: str,
        *,
        trigger_run_id: str,
    ) -> None:
        if not event_ids:
            return
        linked_at = to_db_time(now_utc())
        with self.write_transaction():
            # Sorted: concurrent linkers lock event rows in the same order (no deadlock).
            for event_id in sorted(set(event_ids)):
                self._link_event(event_id, invocation_id, trigger_run_id, linked_at)

    @retry_transient
    def get_invocations_triggered_by_event(self, event_id: str) -> list[str]:
        return self._invocations_for_events([event_id])[event_id]

    @retry_transient
    def list_event_codes(self) -> list[str]:
        from pynenc_django.models import EventEntry

        codes = self._rows(EventEntry).values_list("event_code", flat=True).distinct()
        # Sorted in Python: the same order on every vendor and collation.
        return sorted(set(codes))

    # ------------------------------------------------------------------ #
    # Trigger runs
    # ------------------------------------------------------------------ #

    def _run_participant_rows(self, run: TriggerRunRecord) -> list[TriggerRunCondition]:
        """One row per participant, plus rows for ids the flat lists name that no
        participant covers (records built by hand or by older pynenc versions)."""
        from pynenc_django.models import TriggerRunCondition

        app_id = self.app.app_id
        rows: list[TriggerRunCondition] = []
        events: set[str] = set()
        sources: set[str] = set()
        valid: set[str] = set()

        def row(**fields: Any) -> TriggerRunCondition:
            valid_condition_id = fields.get("valid_condition_id")
            if valid_condition_id:
                fields["valid_condition_key"] = id_key(valid_condition_id)
            return TriggerRunCondition(app_id=app_id, trigger_run_id=run.trigger_run_id, **fields)

        for p in run.participants or []:
            rows.append(
                row(
                    context_type=p.context_type,
                    condition_id=p.condition_id,
                    valid_condition_id=p.valid_condition_id,
                    event_id=p.event_id,
                    source_invocation_id=p.source_invocation_id,
                )
            )
            events.add(p.event_id or "")
            sources.add(p.source_invocation_id or "")
            valid.add(p.valid_condition_id or "")
        rows.extend(row(event_id=e) for e in dict.fromkeys(run.event_ids) if e not in events)
        rows.extend(
            row(source_invocation_id=s)
            for s in dict.fromkeys(run.source_invocation_ids)
            if s not in sources
        )
        rows.extend(
            row(valid_condition_id=v)
            for v in dict.fromkeys(run.valid_condition_ids)
            if v not in valid
        )
        return rows

    @retry_transient
    def store_trigger_run(self, run: TriggerRunRecord) -> None:
        from pynenc_django.models import TriggerRunCondition, TriggerRunEntry

        participants = self._run_participant_rows(run)
        with self.write_transaction():
            self._upsert(
                TriggerRunEntry,
                [
                    TriggerRunEntry(
                        app_id=self.app.app_id,
                        trigger_run_id=run.trigger_run_id,
                        trigger_id=run.trigger_id,
                        task_id_key=run.task_id_key,
                        logic_value=run.logic_value,
                        claimed_at=to_db_time(run.claimed_at) if run.claimed_at else None,
                        executed_at=to_db_time(run.executed_at) if run.executed_at else None,
                        triggered_invocation_id=run.triggered_invocation_id,
                        atomic_service_run_id=run.atomic_service_run_id,
                        trigger_run_json=run.to_json(),
                    )
                ],
                unique_fields=["app_id", "trigger_run_id"],
                update_fields=[
                    "trigger_id",
                    "task_id_key",
                    "logic_value",
                    "claimed_at",
                    "executed_at",
                    "triggered_invocation_id",
                    "atomic_service_run_id",
                    "trigger_run_json",
                ],
            )
            self._rows(TriggerRunCondition).filter(trigger_run_id=run.trigger_run_id).delete()
            TriggerRunCondition.objects.using(self.db_alias).bulk_create(participants)

    @staticmethod
    def _decode_runs(rows: Iterable[str]) -> list[TriggerRunRecord]:
        return [TriggerRunRecord.from_json(row) for row in rows]

    def _runs_ordered(self, runs: Any) -> list[TriggerRunRecord]:
        """Oldest execution first; runs never executed first, like the references."""
        from django.db.models import F

        ordered = runs.order_by(F("executed_at").asc(nulls_first=True), "id")
        return self._decode_runs(ordered.values_list("trigger_run_json", flat=True))

    def _runs_with_participant(self, **match: Any) -> list[TriggerRunRecord]:
        """Runs with at least one participant row matching ``match``: one query."""
        from django.db.models import Exists, OuterRef

        from pynenc_django.models import TriggerRunCondition, TriggerRunEntry

        participants = TriggerRunCondition.objects.using(self.db_alias).filter(
            app_id=self.app.app_id, trigger_run_id=OuterRef("trigger_run_id"), **match
        )
        return self._runs_ordered(self._rows(TriggerRunEntry).filter(Exists(participants)))

    def get_trigger_run(self, trigger_run_id: str) -> TriggerRunRecord | None:
        return self.get_trigger_runs_batch([trigger_run_id])[trigger_run_id]

    @retry_transient
    def get_trigger_runs_batch(self, run_ids: Sequence[str]) -> dict[str, TriggerRunRecord | None]:
        from pynenc_django.models import TriggerRunEntry

        found: dict[str, TriggerRunRecord | None] = dict.fromkeys(run_ids)
        for chunk in chunked(list(found)):
            rows = (
                self._rows(TriggerRunEntry)
                .filter(trigger_run_id__in=chunk)
                .values_list("trigger_run_id", "trigger_run_json")
            )
            for run_id, run_json in rows:
                found[run_id] = TriggerRunRecord.from_json(run_json)
        return found

    @retry_transient
    def get_trigger_runs_for_event(self, event_id: str) -> list[TriggerRunRecord]:
        return self._runs_with_participant(event_id=event_id)

    @retry_transient
    def get_trigger_runs_sourced_by_invocation(self, invocation_id: str) -> list[TriggerRunRecord]:
        return self._runs_with_participant(source_invocation_id=invocation_id)

    @retry_transient
    def get_trigger_runs_for_valid_condition(
        self, valid_condition_id: str
    ) -> list[TriggerRunRecord]:
        return self._runs_with_participant(valid_condition_key=id_key(valid_condition_id))

    @retry_transient
    def get_trigger_runs_for_invocation(self, invocation_id: str) -> list[TriggerRunRecord]:
        from pynenc_django.models import TriggerRunEntry

        runs = self._rows(TriggerRunEntry).filter(triggered_invocation_id=invocation_id)
        return self._runs_ordered(runs)

    @retry_transient
    def get_trigger_runs_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        *,
        event_code: str | None = None,
        task_id_key: str | None = None,
        limit: int | None = None,
    ) -> list[TriggerRunRecord]:
        from django.db.models import Exists, OuterRef

        from pynenc_django.models import EventEntry, TriggerRunCondition, TriggerRunEntry

        runs = self._rows(TriggerRunEntry).filter(
            executed_at__gte=to_db_time(start_time), executed_at__lte=to_db_time(end_time)
        )
        if task_id_key is not None:
            runs = runs.filter(task_id_key=task_id_key)
        if event_code is not None:
            coded = self._rows(EventEntry).filter(event_code=event_code).values("event_id")
            runs = runs.filter(
                Exists(
                    TriggerRunCondition.objects.using(self.db_alias).filter(
                        app_id=self.app.app_id,
                        trigger_run_id=OuterRef("trigger_run_id"),
                        event_id__in=coded,
                    )
                )
            )
        page = runs.order_by("executed_at", "id").values_list("trigger_run_json", flat=True)
        if limit is not None:
            page = page[:limit]
        return self._decode_runs(page)

    @retry_transient
    def get_referenced_atomic_service_run_ids(self) -> set[str]:
        """Index-only on (app_id, atomic_service_run_id); the base decodes every run."""
        from pynenc_django.models import TriggerRunEntry

        ids = (
            self._rows(TriggerRunEntry)
            .filter(atomic_service_run_id__isnull=False)
            .values_list("atomic_service_run_id", flat=True)
            .distinct()
        )
        return set(ids)

    # ------------------------------------------------------------------ #
    # Monitoring retention (driven by BaseTrigger._auto_purge_events)
    # ------------------------------------------------------------------ #

    def _delete_events(self, event_ids: Sequence[str]) -> None:
        from pynenc_django.models import EventConditionMatch, EventEntry, EventTriggeredInvocation

        for chunk in chunked(event_ids):
            for model in (EventConditionMatch, EventTriggeredInvocation, EventEntry):
                self._rows(model).filter(event_id__in=chunk).delete()

    def _delete_runs(self, run_ids: Sequence[str]) -> int:
        from pynenc_django.models import TriggerRunCondition, TriggerRunEntry

        deleted = 0
        for chunk in chunked(run_ids):
            self._rows(TriggerRunCondition).filter(trigger_run_id__in=chunk).delete()
            deleted += self._rows(TriggerRunEntry).filter(trigger_run_id__in=chunk).delete()[0]
        return deleted

    @retry_transient
    def _age_purge_events(self, threshold: datetime) -> list[str]:
        from pynenc_django.models import EventEntry

        with self.write_transaction():
            old = self._rows(EventEntry).filter(timestamp__lt=to_db_time(threshold))
            event_ids = list(old.values_list("event_id", flat=True))
            self._delete_events(event_ids)
        return event_ids

    @retry_transient
    def _age_purge_trigger_runs(self, threshold: datetime) -> int:
        from pynenc_django.models import TriggerRunEntry

        with self.write_transaction():
            old = self._rows(TriggerRunEntry).filter(executed_at__lt=to_db_time(threshold))
            return self._delete_runs(list(old.values_list("trigger_run_id", flat=True)))

    @retry_transient
    def _cap_purge_events(self) -> list[str]:
        from pynenc_django.models import EventEntry

        cap = int(self.conf.event_max_records)
        if cap <= 0:
            return []
        with self.write_transaction():
            newest_first = self._rows(EventEntry).order_by("-timestamp", "-id")
            event_ids = list(newest_first.values_list("event_id", flat=True)[cap:])
            self._delete_events(event_ids)
        return event_ids

    @retry_transient
    def _cap_purge_trigger_runs(self) -> int:
        from django.db.models.functions import Coalesce

        from pynenc_django.models import TriggerRunEntry

        cap = int(self.conf.trigger_run_max_records)
        if cap <= 0:
            return 0
        with self.write_transaction():
            newest_first = self._rows(TriggerRunEntry).order_by(
                Coalesce("executed_at", "claimed_at").desc(nulls_last=True), "-id"
            )
            run_ids = list(newest_first.values_list("trigger_run_id", flat=True)[cap:])
            return self._delete_runs(run_ids)

    @retry_transient
    def _cascade_delete_runs_for_events(self, event_ids: list[str]) -> int:
        from pynenc_django.models import TriggerRunCondition

        unique_ids = list(dict.fromkeys(event_ids))
        with self.write_transaction():
            run_ids: set[str] = set()
            for chunk in chunked(unique_ids):
                run_ids.update(
                    self._rows(TriggerRunCondition)
                    .filter(event_id__in=chunk)
                    .values_list("trigger_run_id", flat=True)
                )
            return self._delete_runs(sorted(run_ids))
