"""Runner heartbeats, pynenc's recovery queries, and retention of final invocations."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import ActiveRunnerInfo

from pynenc_django.db import retry_transient
from pynenc_django.orchestrator.core import OrchestratorCore
from pynenc_django.utils import (
    IN_CHUNK,
    chunked,
    now_utc,
)


class RunnersMixin(OrchestratorCore):
    """Part of :class:`~pynenc_django.orchestrator.DjangoOrchestrator`; see the module docstring."""

    # ------------------------------------------------------------------ retention

    @retry_transient
    def set_up_invocation_auto_purge(self, invocation_id: str) -> None:
        self._invocations().filter(invocation_id=invocation_id).update(auto_purge_at=now_utc())

    @retry_transient
    def auto_purge(self) -> None:
        """Delete final invocations older than ``auto_final_invocation_purge_hours``."""
        from pynenc_django.models import BlockingEdge, InvocationArgument

        cutoff = now_utc() - timedelta(hours=float(self.conf.auto_final_invocation_purge_hours))
        app_id = self.app.app_id
        while True:
            ids = list(
                self._invocations()
                .filter(auto_purge_at__lte=cutoff)
                .values_list("invocation_id", flat=True)[:IN_CHUNK]
            )
            if not ids:
                return
            with self.write_transaction():
                edges = BlockingEdge.objects.using(self.db_alias).for_app(app_id)
                edges.filter(waited_id__in=ids).delete()
                edges.filter(waiter_id__in=ids).delete()
                InvocationArgument.objects.using(self.db_alias).for_app(app_id).filter(
                    invocation_id__in=ids
                ).delete()
                self._invocations().filter(invocation_id__in=ids).delete()

    @retry_transient
    def purge(self) -> None:
        """Delete every orchestrator row of this app (testing and resets only)."""
        from pynenc_django import models

        self.store.finals.clear()
        with self.write_transaction():
            for model in (
                models.Invocation,
                models.InvocationArgument,
                models.BlockingEdge,
                models.RunnerHeartbeat,
                models.AtomicServiceExecution,
                models.RevokeRequest,
            ):
                model.objects.using(self.db_alias).for_app(self.app.app_id).delete()
            models.AtomicServiceGate.objects.using(self.db_alias).filter(
                app_id=self.app.app_id
            ).delete()

    # ------------------------------------------------------------------ runners

    @retry_transient
    def register_runner_heartbeats(
        self,
        runner_ids: list[str],
        can_run_atomic_service: bool = False,
        consumed_queues: Sequence[str] | None = None,
    ) -> None:
        """Upsert heartbeats. ``created_at`` is set once: slot order depends on it.

        The runner's name (:meth:`runner_name`) goes with every heartbeat this process
        writes: the runner's own, and its workers', whichever process writes them.
        """
        from pynenc_django.models import RunnerHeartbeat

        if not runner_ids:
            return
        now = now_utc()
        queues = list(consumed_queues or ())
        name = self.runner_name()
        # One statement (an upsert), no transaction around it: a heartbeat every few
        # seconds per runner is most of what an idle cluster sends.
        # An unnamed writer (a script's runner, an older process) never erases a name.
        updated = ["last_heartbeat", "can_run_atomic_service", "consumed_queues"]
        self._upsert(
            RunnerHeartbeat,
            [
                RunnerHeartbeat(
                    app_id=self.app.app_id,
                    runner_id=runner_id,
                    created_at=now,
                    last_heartbeat=now,
                    can_run_atomic_service=can_run_atomic_service,
                    consumed_queues=queues,
                    name=name,
                )
                for runner_id in dict.fromkeys(runner_ids)
            ],
            ["app_id", "runner_id"],
            [*updated, "name"] if name else updated,
        )

    def runner_name(self) -> str:
        """The name this process's runner was given (``pynenc_runner --name``), or ``""``.

        A pynenc setting, ``django_runner_name``, so it travels with the app into spawned
        workers.
        """
        from pynenc_django.models.base import RUNNER_NAME_LENGTH

        return str(self.conf.django_runner_name or "")[:RUNNER_NAME_LENGTH]

    @retry_transient
    def forget_runners(self, runner_ids: Sequence[str]) -> None:
        """Drop the heartbeats of runners that stopped cleanly.

        Otherwise they would count as atomic-service members, holding time slots nobody
        uses, until ``runner_considered_dead_after_minutes`` passes.
        """
        from pynenc_django.models import RunnerHeartbeat

        for chunk in chunked(list(runner_ids)):
            RunnerHeartbeat.objects.using(self.db_alias).for_app(self.app.app_id).filter(
                runner_id__in=chunk
            ).delete()

    @retry_transient
    def _get_active_runners(
        self, timeout_seconds: float, can_run_atomic_service: bool | None = None
    ) -> list[ActiveRunnerInfo]:
        from pynenc_django.models import RunnerHeartbeat

        qs = (
            RunnerHeartbeat.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(last_heartbeat__gte=now_utc() - timedelta(seconds=timeout_seconds))
        )
        if can_run_atomic_service is not None:
            qs = qs.filter(can_run_atomic_service=can_run_atomic_service)
        return [
            ActiveRunnerInfo(
                runner_id=row.runner_id,
                creation_time=row.created_at,
                last_heartbeat=row.last_heartbeat,
                allow_to_run_atomic_service=row.can_run_atomic_service,
                consumed_queues=tuple(row.consumed_queues or ()),
            )
            for row in qs.order_by("created_at", "runner_id")
        ]

    # ------------------------------------------------------------------ recovery

    @retry_transient
    def get_pending_invocations_for_recovery(self) -> Iterator[InvocationId]:
        cutoff = now_utc() - timedelta(seconds=float(self.app.conf.max_pending_seconds))
        qs = self._invocations().filter(
            status=InvocationStatus.PENDING.value, status_timestamp__lte=cutoff
        )
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    @retry_transient
    def _get_running_invocations_for_recovery(
        self, timeout_seconds: float
    ) -> Iterator[InvocationId]:
        """RUNNING invocations whose *owner* has no heartbeat, or a stale one."""
        from django.db.models import Exists, OuterRef

        from pynenc_django.models import RunnerHeartbeat

        alive = RunnerHeartbeat.objects.using(self.db_alias).filter(
            app_id=self.app.app_id,
            runner_id=OuterRef("status_runner_id"),
            last_heartbeat__gte=now_utc() - timedelta(seconds=timeout_seconds),
        )
        qs = (
            self._invocations()
            .filter(status=InvocationStatus.RUNNING.value, status_runner_id__isnull=False)
            .exclude(Exists(alive))
        )
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])
