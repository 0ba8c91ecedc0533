"""Deleting trigger rows: everything of this app (pynenc's ``_purge``), and the monitoring
retention ``BaseTrigger._auto_purge_events`` drives (events and trigger runs by age and by
count, with the runs of deleted events).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pynenc_django.db import retry_transient
from pynenc_django.trigger.core import TriggerCore
from pynenc_django.utils import chunked, to_db_time


class RetentionMixin(TriggerCore):
    """Part of :class:`~pynenc_django.trigger.DjangoTrigger`; see the module docstring."""

    # ------------------------------------------------------------------ #
    # Purge
    # ------------------------------------------------------------------ #

    @retry_transient
    def _purge(self) -> None:
        from pynenc_django.models import trigger as trigger_models

        self._sourced = None
        with self.write_transaction():
            for name in trigger_models.__all__:
                self._rows(getattr(trigger_models, name)).delete()

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
