"""What every part of :class:`~pynenc_django.trigger.DjangoTrigger` stands on: its settings,
its per-process state and the database access of
:class:`~pynenc_django.db.DjangoBackendMixin`, on pynenc's ``BaseTrigger``.

Each of the trigger's modules is a mixin deriving from :class:`TriggerCore`, so that each
is type-checked against what it uses; :class:`DjangoTrigger` composes them, all before this
class in its MRO (their overrides of pynenc's methods win).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from pynenc.conf.validation_trigger import validate_trigger_config
from pynenc.trigger.base_trigger import BaseTrigger

from pynenc_django.conf import ConfigTriggerDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django
from pynenc_django.utils import sha256_hex

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.trigger.conditions import TriggerCondition

    from pynenc_django.models.base import AppScopedModel, AppScopedQuerySet

id_key = sha256_hex  # fixed-length key for pynenc ids with no length bound (condition ids)


class TriggerCore(DjangoBackendMixin, BaseTrigger):
    """pynenc's trigger component stored in the project's database, scoped by ``app_id``."""

    def __init__(self, app: Pynenc) -> None:
        ensure_django()
        super().__init__(app)
        self._next_claim_prune = 0.0  # see .claims
        # (expires at, task key -> the conditions watching it); None after any change this
        # process makes (see ConditionsMixin.get_conditions_sourced_from_task)
        self._sourced: tuple[float, dict[str, list[TriggerCondition]]] | None = None
        # Inside this process's own trigger loop: what it records needs no wake-up (.schedule).
        self._in_turn = False

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

    def _rows(self, model: type[AppScopedModel]) -> AppScopedQuerySet:
        """Every query starts here: right database, this app's rows only."""
        return model.objects.using(self.db_alias).for_app(self.app.app_id)
