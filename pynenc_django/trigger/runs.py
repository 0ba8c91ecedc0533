"""Trigger-run records: stored with one participant row per event, source invocation and
valid condition, so the reads by participant are single indexed queries; and the run reads
(by id, by participant, by invocation, by time range, atomic-service runs referenced).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pynenc.trigger.monitoring import TriggerRunRecord

from pynenc_django.db import retry_transient
from pynenc_django.trigger.core import TriggerCore, id_key
from pynenc_django.utils import chunked, to_db_time

if TYPE_CHECKING:
    from pynenc_django.models import TriggerRunCondition


class RunsMixin(TriggerCore):
    """Part of :class:`~pynenc_django.trigger.DjangoTrigger`; see the module docstring."""

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
