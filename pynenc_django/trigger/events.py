"""Events and their links to the invocations they triggered: an event's triggered count is
bumped only with a new (event, invocation) link, in the same transaction, so concurrent
linkers count each pair once; and the event reads (by id, filtered pages, counts and
timeline markers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pynenc.trigger.monitoring import EventMarker, EventMarkerPage, EventRecord

from pynenc_django.db import retry_transient
from pynenc_django.trigger.core import TriggerCore, id_key
from pynenc_django.utils import chunked, from_db_time, now_utc, to_db_time


class EventsMixin(TriggerCore):
    """Part of :class:`~pynenc_django.trigger.DjangoTrigger`; see the module docstring."""

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
        from django.db import IntegrityError
        from django.db.models import F

        from pynenc_django.models import EventEntry, EventTriggeredInvocation

        try:
            with self.write_transaction():
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
                timestamp=from_db_time(timestamp),
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
