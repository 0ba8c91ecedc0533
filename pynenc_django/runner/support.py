"""What the runner and its workers share: connection hygiene around invocations and idle
polls, finishing begun reroutes, and the orchestrator's Django side."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

from pynenc.exceptions import InvocationStatusError
from pynenc.identifiers.invocation_id import InvocationId

from pynenc_django.db import is_database_error, retry_transient
from pynenc_django.ops import recovery
from pynenc_django.ops.recovery import PutBack

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.runner.runner_context import RunnerContext

    from pynenc_django.orchestrator import DjangoOrchestrator

logger = logging.getLogger("pynenc_django")

WORKER_CLS = recovery.WORKER_CLS  # the runner class name pynenc records for worker contexts
# Backoff bounds while the database is unreachable.
DB_RETRY_MIN_SEC = 0.2
DB_RETRY_MAX_SEC = 5.0


def django_orchestrator(app: Pynenc) -> DjangoOrchestrator:
    """The app's orchestrator, as the Django one whose extra methods this runner calls
    (``claim``, ``get_owned_invocation_ids``, ``forget_runners``): the runner is
    for the Django backends. Not checked at run time."""
    return cast("DjangoOrchestrator", app.orchestrator)


def fail_owned(app: Pynenc, invocation_id: str, error: Exception, owner_ctx: RunnerContext) -> bool:
    """Record FAILED with ``error`` an invocation whose worker (``owner_ctx``) was killed
    for it (revoked, past its time limit), in the worker's name: only the owner may end
    a running invocation, so this is a compare-and-set on the status and the owner.
    Its revoke request goes in the same transaction. False when it had finished or
    moved on (rerouted, taken by another worker): nothing changed."""
    return _fail_owned(django_orchestrator(app), invocation_id, error, owner_ctx)


@retry_transient
def _fail_owned(
    orchestrator: DjangoOrchestrator,
    invocation_id: str,
    error: Exception,
    owner_ctx: RunnerContext,
) -> bool:
    from pynenc_django.models import RevokeRequest

    try:
        with orchestrator.write_transaction():
            iid = InvocationId(invocation_id)
            if not orchestrator.fail_claimed(iid, error, owner_ctx, claimed=True):
                return False
            RevokeRequest.objects.using(orchestrator.db_alias).for_app(
                orchestrator.app.app_id
            ).filter(invocation_id=invocation_id).delete()
    except InvocationStatusError:
        return False  # final, or no longer its (the FAILED's compare-and-set)
    return True


def summary(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line log messages."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def drain_put_backs(put_backs: dict[str, PutBack], log: logging.Logger) -> None:
    """Finish every begun reroute; a database error stops (the rest stay for later)."""
    for invocation_id, put_back in list(put_backs.items()):
        try:
            if put_back():
                log.info(f"Rerouted invocation:{invocation_id}")
        except Exception as exc:
            if is_database_error(exc):
                raise
            # Purged meanwhile, say: nothing to put back, and no reason to stop the loop.
            log.error(f"Could not reroute invocation:{invocation_id}: {summary(exc)}")
        del put_backs[invocation_id]


def close_stale_connections(own_alias: str) -> None:
    """Between idle polls and after database errors: close connections that are broken;
    other aliases' (a task's) also once past ``CONN_MAX_AGE``. Django reopens them lazily.

    The runner's own connection on ``own_alias`` is kept whatever its age: its work does
    not depend on ``CONN_MAX_AGE`` (:mod:`pynenc_django.runner.task_connections`).
    """
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        expired = conn.close_at is not None and time.monotonic() >= conn.close_at
        if (expired and conn.alias != own_alias) or (conn.errors_occurred and not conn.is_usable()):
            conn.close()
