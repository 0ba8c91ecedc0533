"""Where an invocation is queued: its task's queue and priority unless its call asked for
others (``apply_async(queue=..., priority=...)``), at once or at a due time (``countdown``,
``eta``, a retry's backoff); expired invocations end FAILED without running."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pynenc.invocation.status import InvocationStatus

from pynenc_django.calling.options import CallOptions, current_call_options
from pynenc_django.conf import retry_settings
from pynenc_django.exceptions import InvocationExpiredError
from pynenc_django.orchestrator.core import OrchestratorCore
from pynenc_django.orchestrator.rules import STORAGE_ERROR

if TYPE_CHECKING:
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.runner.runner_context import RunnerContext


class RoutingMixin(OrchestratorCore):
    """Part of :class:`~pynenc_django.orchestrator.DjangoOrchestrator`; see the module docstring."""

    def call_options_of(self, invocation_id: InvocationId) -> CallOptions | None:
        """What the invocation's call asked for, as this process read it with its row."""
        return self.store.options.get(invocation_id)

    def route_of(
        self, invocation: DistributedInvocation, options: CallOptions | None = None
    ) -> tuple[str, float]:
        """``(queue, priority)``: the call's, else the task's."""
        if options is None:
            options = self.call_options_of(invocation.invocation_id)
        queue = invocation.task.broker_queue
        priority = invocation.task.broker_priority
        if options is not None:
            queue = options.queue or queue
            priority = priority if options.priority is None else options.priority
        return queue, priority

    def route_invocation(self, invocation: DistributedInvocation) -> None:
        self.route_invocations([invocation])

    def route_invocations(self, invocations: Sequence[DistributedInvocation]) -> None:
        """pynenc's, by each invocation's own queue and priority, and delayed when the
        call being made (``apply_async``) is not due yet."""
        options = current_call_options()
        due_at = options.due_at if options is not None else None
        if due_at is not None and due_at <= datetime.now(UTC):
            due_at = None
        routes: dict[tuple[str, float], list[InvocationId]] = {}
        for invocation in invocations:
            routes.setdefault(self.route_of(invocation, options), []).append(
                invocation.invocation_id
            )
        for (queue, priority), invocation_ids in routes.items():
            if due_at is None:
                self.app.broker.route_invocations(invocation_ids, queue, priority)
            else:
                self._django_broker.route_delayed(invocation_ids, queue, priority, due_at)

    def set_invocation_retry(
        self, invocation: DistributedInvocation, exception: Exception, runner_ctx: RunnerContext
    ) -> None:
        """pynenc's (RETRY, one more retry counted, queued again), the three in one
        transaction, and queued for later when the task has a retry backoff
        (:class:`~pynenc_django.conf.ConfigRetryDjango`). A database error of our own
        write is raised again, unrecorded (see ``set_invocation_exception``)."""
        if getattr(exception, STORAGE_ERROR, False):
            raise exception
        invocation_id = invocation.invocation_id
        delay = self.retry_delay(invocation)
        with self.write_transaction():
            self.set_invocation_status(invocation_id, InvocationStatus.RETRY, runner_ctx)
            self.increment_invocation_retries(invocation_id)
            if delay <= 0:
                self.route_invocation(invocation)
                return
            queue, priority = self.route_of(invocation)
            due_at = datetime.now(UTC) + timedelta(seconds=delay)
            self._django_broker.route_delayed([invocation_id], queue, priority, due_at)
        self.app.logger.info(
            f"invocation:{invocation_id} RETRY in {delay:.3g}s ({type(exception).__name__})"
        )

    def retry_delay(self, invocation: DistributedInvocation) -> float:
        """Seconds the next retry of ``invocation`` waits (0: at once)."""
        conf = retry_settings(self.app.config_values, invocation.task.task_id.key)
        base = float(conf.retry_backoff)
        if base <= 0:
            return 0.0
        attempt = self.get_invocation_retries(invocation.invocation_id)
        delay = min(float(conf.retry_backoff_max), base * 2.0 ** min(attempt, 64))
        return random.uniform(0.0, delay) if conf.retry_jitter else delay

    def expire_if_due(
        self, invocation: DistributedInvocation, runner_ctx: RunnerContext, now: datetime
    ) -> bool:
        """End a claimed invocation whose call's ``expires`` has passed as FAILED with
        :class:`InvocationExpiredError`, without running it; whether it did."""
        options = self.call_options_of(invocation.invocation_id)
        if options is None or options.expires_at is None or options.expires_at > now:
            return False
        assert options.expires_at is not None
        error = InvocationExpiredError(
            invocation.invocation_id,
            task_id_key=invocation.task.task_id.key,
            expired_at=options.expires_at.isoformat(),
        )
        self.fail_claimed(invocation.invocation_id, error, runner_ctx)
        return True
