"""Waiting for an invocation's result with a timeout (Celery's ``AsyncResult.get(timeout=)``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pynenc import context

from pynenc_django.exceptions import ResultTimeoutError

if TYPE_CHECKING:
    from pynenc.invocation.base_invocation import BaseInvocation


def get_result[R](invocation: BaseInvocation[Any, R], timeout: float | None = None) -> R:
    """``invocation.result``, waiting at most ``timeout`` seconds (``None``: for good).

    Past the timeout it raises :class:`~pynenc_django.exceptions.ResultTimeoutError` (a
    ``TimeoutError``) and changes nothing: the invocation may still run and finish, and a
    later call can wait for it again. Inside a task, a worker of ``pynenc_runner`` runs
    what the task waits for inside the wait; such a nested run may outlast the timeout.
    """
    from pynenc.invocation.dist_invocation import DistributedInvocation

    if timeout is None or not isinstance(invocation, DistributedInvocation):
        return invocation.result
    deadline = time.monotonic() + float(timeout)
    app = invocation.app
    waiting = invocation._get_waiting_invocation_id()
    status = invocation.status
    if not status.is_final() and waiting is not None:
        app.orchestrator.waiting_for_results(waiting, [invocation.invocation_id])
    while not status.is_final():
        if time.monotonic() >= deadline:
            raise ResultTimeoutError(invocation.invocation_id, float(timeout), status.value)
        _wait_once(invocation, waiting)
        status = invocation.status
    return invocation.get_final_result()


def _wait_once(invocation: Any, waiting: Any) -> None:
    """One of the runner's waits for ``invocation`` (ours: at most
    ``invocation_wait_results_sleep_time_sec``, 0.1 s by default, outside a worker)."""
    invocation.app.runner.waiting_for_results(
        waiting, [invocation.invocation_id], context.get_runner_args()
    )
