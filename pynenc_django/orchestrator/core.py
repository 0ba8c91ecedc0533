"""What every part of :class:`~pynenc_django.orchestrator.DjangoOrchestrator` stands on:
its settings, its per-process state and the database access of
:class:`~pynenc_django.db.DjangoBackendMixin`, on pynenc's ``BaseOrchestrator``.

Each of the orchestrator's modules is a mixin deriving from :class:`OrchestratorCore`, so
that each is type-checked against what it uses; :class:`DjangoOrchestrator` composes
them, all before this class in its MRO (their overrides of pynenc's methods win).
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING

from pynenc.invocation.status import InvocationStatusRecord
from pynenc.orchestrator.base_orchestrator import BaseBlockingControl, BaseOrchestrator

from pynenc_django.conf import ConfigOrchestratorDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django
from pynenc_django.orchestrator.blocking import DjangoBlockingControl

if TYPE_CHECKING:
    from datetime import datetime

    from pynenc.app import Pynenc
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.invocation.status import InvocationStatus
    from pynenc.runner.runner_context import RunnerContext

    from pynenc_django.calling.options import CallOptions
    from pynenc_django.models.base import AppScopedQuerySet


class OrchestratorCore(DjangoBackendMixin, BaseOrchestrator):
    """The state and database access shared by the orchestrator's mixins."""

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)
        ensure_django()
        self._blocking_control = DjangoBlockingControl(self)
        self._local = threading.local()  # filter_final's last full look, per thread

    @cached_property
    def conf(self) -> ConfigOrchestratorDjango:
        return ConfigOrchestratorDjango(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )

    @property
    def blocking_control(self) -> BaseBlockingControl:
        return self._blocking_control

    def _invocations(self) -> AppScopedQuerySet:
        from pynenc_django.models import Invocation

        return Invocation.objects.using(self.db_alias).for_app(self.app.app_id)

    if TYPE_CHECKING:
        # What one mixin provides to the others, declared for the type checker only (at
        # run time each is found on its mixin, earlier in DjangoOrchestrator's MRO).

        # .transitions
        @property
        def history_by_database(self) -> bool: ...

        def record_status_change(
            self,
            invocation_id: InvocationId,
            status: InvocationStatus,
            runner_ctx: RunnerContext,
            result: str | None = None,
        ) -> InvocationStatusRecord: ...

        def _report_status(self, invocation_id: InvocationId, status: InvocationStatus) -> None: ...

        def _allowed_sql(self, free: int, owned: int, no_owner: bool) -> str: ...

        # .registration
        @property
        def _routes_here(self) -> bool: ...

        # .claim
        @property
        def _running_claims(self) -> dict[InvocationId, str]: ...

        def fail_claimed(
            self,
            invocation_id: InvocationId,
            error: Exception,
            runner_ctx: RunnerContext,
            claimed: bool = True,
            status: str | None = None,
        ) -> bool: ...

        # .routing
        def expire_if_due(
            self, invocation: DistributedInvocation, runner_ctx: RunnerContext, now: datetime
        ) -> bool: ...

        def route_of(
            self, invocation: DistributedInvocation, options: CallOptions | None = None
        ) -> tuple[str, float]: ...
