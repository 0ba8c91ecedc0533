"""Trigger definitions (which task runs when which conditions are met) and their ordered
links to conditions, loaded in two queries whatever their number.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pynenc.identifiers.task_id import TaskId
from pynenc.models.trigger_definition_dto import TriggerDefinitionDTO
from pynenc.trigger.conditions import CompositeLogic
from pynenc.trigger.trigger_definitions import TriggerDefinition

from pynenc_django.db import retry_transient
from pynenc_django.trigger.core import TriggerCore, id_key
from pynenc_django.utils import chunked

if TYPE_CHECKING:
    from django.db.models import QuerySet


class DefinitionsMixin(TriggerCore):
    """Part of :class:`~pynenc_django.trigger.DjangoTrigger`; see the module docstring."""

    # ------------------------------------------------------------------ #
    # Trigger definitions
    # ------------------------------------------------------------------ #

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

        self._sourced = None
        definitions = self._rows(TriggerDefinitionEntry).filter(task_id_key=task_id.key)
        with self.write_transaction():
            self._rows(TriggerConditionLink).filter(
                trigger_id__in=definitions.values("trigger_id")
            ).delete()
            definitions.delete()
