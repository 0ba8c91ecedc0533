"""Revoking an invocation from code (Celery's ``revoke``): :func:`revoke`.

* **Waiting for a worker** (REGISTERED, REROUTED, RETRY; queued or delayed): cancelled at
  once, in one transaction: FAILED with :class:`InvocationRevokedError` through pynenc's
  state machine (PENDING and RUNNING in the requester's name first, compare-and-sets
  that a worker claiming it at the same moment makes fail: then it is running, below),
  its queued and delayed messages dropped. It never runs.
* **Running** (PENDING, RUNNING, PAUSED) with ``terminate=True``: a request is stored
  (:class:`~pynenc_django.models.RevokeRequest`) and announced
  (:mod:`pynenc_django.wakeup.revokes`); the runner whose worker runs it kills that
  worker (SIGKILL), records it FAILED with the error in the worker's name (only the owner
  may end a running invocation) and does not put it back; the worker is replaced, and
  whatever else it ran (a nested run inside a wait) is rerouted as after any worker
  death. Only ``pynenc_runner``'s workers (:class:`~pynenc_django.runner.DjangoPersistentProcessRunner`)
  can be told: another runner's invocation is left alone.
* **Running** without ``terminate``, or **final**: nothing changes.
* **Between statuses** (KILLED on its way back to its queue, a recovery status): it is
  given :data:`SETTLE_SEC` to get there and be cancelled; after that a request is stored
  for the runners, which cancel it once it is back in its queue (``CANCELLING``).

The history rows of a cancel carry a runner context naming the requester
(:func:`revoke_runner_context`, shown in the admin like an admin action's); the error
carries the reason and the requester either way.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pynenc.exceptions import InvocationStatusError
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus

from pynenc_django.db import retry_transient
from pynenc_django.exceptions import InvocationNotStoredError, InvocationRevokedError
from pynenc_django.utils import now_utc

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pynenc.app import Pynenc
    from pynenc.invocation.base_invocation import BaseInvocation
    from pynenc.runner.runner_context import RunnerContext

    from pynenc_django.orchestrator import DjangoOrchestrator

#: The runner class history rows of a revoke name (the admin's actions use "DjangoAdmin").
REVOKE_RUNNER_CLS = "DjangoRevoke"
_CONTEXT_PREFIX = "revoke:"
#: Longest ``requested_by``: it names the requester's runner context (an id column of
#: 255 characters, with :data:`_CONTEXT_PREFIX`) and is stored with the request.
MAX_REQUESTER_LENGTH = 200

S = InvocationStatus
#: Statuses in which an invocation belongs to a worker (pynenc's ownership rules).
RUNNING_STATUSES = frozenset({S.PENDING, S.RUNNING, S.PAUSED})
#: How long :func:`revoke` waits for an invocation on its way back to its queue (KILLED,
#: a recovery status, CONCURRENCY_CONTROLLED: milliseconds, usually) to get there.
SETTLE_SEC = 1.0
_SETTLE_STEP_SEC = 0.05


class RevokeOutcome(StrEnum):
    """What :func:`revoke` did."""

    #: It was waiting for a worker: it is FAILED now and never runs.
    CANCELLED = "cancelled"
    #: It is running: its runner will kill its worker and record it FAILED.
    TERMINATING = "terminating"
    #: It was between statuses (KILLED on its way back to its queue, say): a runner
    #: cancels it once it is back there (or, with ``terminate``, kills the worker that
    #: took it meanwhile).
    CANCELLING = "cancelling"
    #: It is running and ``terminate`` was not given (or its runner cannot be told):
    #: nothing changed.
    NOT_TERMINATED = "not_terminated"
    #: It had finished: nothing changed.
    ALREADY_FINAL = "already_final"


@dataclass(frozen=True)
class Revoked:
    """The answer of :func:`revoke`."""

    invocation_id: str
    outcome: RevokeOutcome
    #: The status the invocation had when :func:`revoke` decided (before a cancel).
    status: str
    #: Why, in words (for logs and messages).
    detail: str = ""


def revoke(
    invocation_or_id: BaseInvocation[Any, Any] | str,
    *,
    terminate: bool = False,
    reason: str = "",
    requested_by: str | None = None,
    app: Pynenc | None = None,
) -> Revoked:
    """Revoke an invocation (see the module docstring): cancel it if it waits for a
    worker; with ``terminate=True``, have its runner kill the worker running it.

    ``reason`` and ``requested_by`` (default: this process, ``pid N on host``) go into
    the :class:`InvocationRevokedError` its ``.result`` raises. ``invocation_or_id`` is an
    invocation, or an id of the project's app (``app``: of another Django-backed app).

    :raises InvocationNotStoredError: no invocation with this id is stored.
    :raises ValueError: a ``reason`` or ``requested_by`` that is not a string, or a
        ``requested_by`` that is empty or longer than :data:`MAX_REQUESTER_LENGTH`.
    """
    invocation_id, app = _resolve(invocation_or_id, app)
    if not isinstance(reason, str):
        raise ValueError(f"revoke(reason={reason!r}): the reason must be a string")
    requester = _requester(requested_by)
    orchestrator = _django_orchestrator(app)
    ctx = revoke_runner_context(requester)
    settle_until = time.monotonic() + SETTLE_SEC
    while True:
        status, owner, task_key = _look(orchestrator, invocation_id)
        if status.is_final():
            return Revoked(invocation_id, RevokeOutcome.ALREADY_FINAL, status.value, "finished")
        if status.is_available_for_run():
            error = InvocationRevokedError(
                invocation_id, task_id_key=task_key, reason=reason, requested_by=requester
            )
            if cancel_waiting(orchestrator, invocation_id, error, ctx):
                return Revoked(
                    invocation_id, RevokeOutcome.CANCELLED, status.value, "it was not run"
                )
            if time.monotonic() < settle_until:
                continue  # a worker claimed it meanwhile: look again
        elif status in RUNNING_STATUSES:
            if not terminate:
                return Revoked(
                    invocation_id,
                    RevokeOutcome.NOT_TERMINATED,
                    status.value,
                    "it is running; pass terminate=True to stop it",
                )
            if why_not := _cannot_terminate(orchestrator, owner):
                return Revoked(invocation_id, RevokeOutcome.NOT_TERMINATED, status.value, why_not)
            _request(orchestrator, invocation_id, reason, requester, terminate=True)
            return Revoked(
                invocation_id,
                RevokeOutcome.TERMINATING,
                status.value,
                f"its runner kills worker {owner} and records it FAILED",
            )
        elif time.monotonic() < settle_until:
            # KILLED, a recovery status, CONCURRENCY_CONTROLLED: on its way back to its
            # queue, which takes milliseconds.
            time.sleep(_SETTLE_STEP_SEC)
            continue
        # Still between statuses after SETTLE_SEC (a reroute cut by a database error, a
        # concurrency-controlled ping-pong): the runners cancel it once it is back in
        # its queue (with ``terminate``, they also kill a worker that took it).
        _request(orchestrator, invocation_id, reason, requester, terminate=terminate)
        return Revoked(
            invocation_id,
            RevokeOutcome.CANCELLING,
            status.value,
            "it is on its way back to its queue; a runner cancels it there",
        )


def requester_context(runner_cls: str, runner_id: str) -> RunnerContext:
    """A runner context of this process and thread that names who asked for a change made
    outside any runner (a revoke, an admin action): the history rows of the change carry it."""
    from pynenc.runner.runner_context import RunnerContext

    return RunnerContext(
        runner_cls=runner_cls,
        runner_id=runner_id,
        pid=os.getpid(),
        hostname=socket.gethostname(),
        thread_id=threading.get_ident(),
        parent_ctx=None,
    )


def revoke_runner_context(requested_by: str) -> RunnerContext:
    """The runner context the history rows of a revoke carry: it names the requester."""
    return requester_context(REVOKE_RUNNER_CLS, f"{_CONTEXT_PREFIX}{requested_by}")


def _resolve(
    invocation_or_id: BaseInvocation[Any, Any] | str, app: Pynenc | None
) -> tuple[str, Pynenc]:
    if isinstance(invocation_or_id, str):
        if app is None:
            from pynenc_django.project import get_app

            app = get_app()
        return invocation_or_id, app
    invocation_id = getattr(invocation_or_id, "invocation_id", None)
    if not isinstance(invocation_id, str):
        raise ValueError(
            f"revoke({invocation_or_id!r}): pass an invocation or an invocation id (a string)"
        )
    return invocation_id, app or invocation_or_id.app


def _requester(requested_by: str | None) -> str:
    if requested_by is None:
        return f"pid {os.getpid()} on {socket.gethostname()}"[:MAX_REQUESTER_LENGTH]
    if not isinstance(requested_by, str) or not requested_by.strip():
        raise ValueError(
            f"revoke(requested_by={requested_by!r}): name the requester with a non-empty "
            "string (a user name, a service), or leave it out"
        )
    if len(requested_by) > MAX_REQUESTER_LENGTH:
        raise ValueError(
            f"revoke(requested_by=...): {len(requested_by)} characters, at most "
            f"{MAX_REQUESTER_LENGTH}"
        )
    return requested_by


def _django_orchestrator(app: Pynenc) -> DjangoOrchestrator:
    from pynenc_django.orchestrator import DjangoOrchestrator

    orchestrator = app.orchestrator
    if not isinstance(orchestrator, DjangoOrchestrator):
        raise TypeError(
            f"revoke() needs an app on the Django backends; app {app.app_id!r} uses "
            f"{type(orchestrator).__name__}"
        )
    return orchestrator


@retry_transient
def _look(orchestrator: DjangoOrchestrator, invocation_id: str) -> tuple[S, str | None, str]:
    """Status, owner and task key, read fresh (no cached status)."""
    row = (
        orchestrator._invocations()
        .filter(invocation_id=invocation_id)
        .values_list("status", "status_runner_id", "task_id_key")
        .first()
    )
    if row is None:
        app = orchestrator.app
        raise InvocationNotStoredError.for_app(invocation_id, app.app_id, orchestrator.db_alias)
    return S(row[0]), row[1], row[2]


@retry_transient
def cancel_waiting(
    orchestrator: DjangoOrchestrator,
    invocation_id: str,
    error: InvocationRevokedError,
    ctx: RunnerContext,
) -> bool:
    """End an invocation that waits for a worker as FAILED with ``error`` and drop its
    messages and revoke request, in one transaction; False (nothing changed) when a
    worker took it first, or it is final."""
    from pynenc_django.broker import DjangoBroker
    from pynenc_django.models import RevokeRequest

    app = orchestrator.app
    iid = InvocationId(invocation_id)
    try:
        with orchestrator.write_transaction():
            if not orchestrator.fail_claimed(iid, error, ctx, claimed=False):
                return False
            if isinstance(app.broker, DjangoBroker):
                app.broker.cancel_delayed(iid)  # and its queued message
            RevokeRequest.objects.using(orchestrator.db_alias).for_app(app.app_id).filter(
                invocation_id=invocation_id
            ).delete()
    except InvocationStatusError:
        return False
    return True


@retry_transient
def _request(
    orchestrator: DjangoOrchestrator,
    invocation_id: str,
    reason: str,
    requested_by: str,
    terminate: bool,
) -> None:
    """Store a revoke request and announce it. The first one of an invocation stands (a
    later ``terminate`` only adds that)."""
    from pynenc_django.models import RevokeRequest
    from pynenc_django.wakeup.revokes import announce_revoke

    app = orchestrator.app
    with orchestrator.write_transaction():
        request, created = RevokeRequest.objects.using(orchestrator.db_alias).get_or_create(
            app_id=app.app_id,
            invocation_id=invocation_id,
            defaults={
                "reason": reason,
                "requested_by": requested_by,
                "requested_at": now_utc(),
                "terminate": terminate,
            },
        )
        if not created and terminate and not request.terminate:
            RevokeRequest.objects.using(orchestrator.db_alias).filter(pk=request.pk).update(
                terminate=True
            )
        if orchestrator.conf.django_listen_notify:
            announce_revoke(orchestrator.db_alias, app.app_id)


def _cannot_terminate(orchestrator: DjangoOrchestrator, owner: str | None) -> str:
    """Why the owner of a running invocation cannot be told to terminate it (it is not a
    worker of a ``DjangoPersistentProcessRunner``), or ``""``."""
    from django.db.models import Exists, OuterRef

    from pynenc_django.models import RunnerContextRecord
    from pynenc_django.ops.recovery import WORKER_CLS
    from pynenc_django.runner import runner_class_names

    if owner is None:
        return "it has no owner"
    contexts = RunnerContextRecord.objects.using(orchestrator.db_alias).for_app(
        orchestrator.app.app_id
    )
    parents = contexts.filter(
        runner_id=OuterRef("parent_runner_id"), runner_cls__in=runner_class_names()
    )
    ours = contexts.filter(runner_id=owner, runner_cls=WORKER_CLS).filter(Exists(parents))
    if ours.exists():
        return ""
    found = contexts.filter(runner_id=owner).values_list("runner_cls", flat=True).first()
    return (
        f"its owner {owner} ({found or 'unknown runner'}) is not a worker of pynenc_runner "
        "(DjangoPersistentProcessRunner), which alone can be told to terminate it"
    )


# ---------------------------------------------------------------------------- runners' side


@dataclass(frozen=True)
class PendingRevoke:
    """A stored revoke request, with its invocation as the runner reading it sees it."""

    request_id: int
    invocation_id: str
    reason: str
    requested_by: str
    terminate: bool
    #: ``None``: the invocation is gone (purged).
    status: S | None
    owner: str | None
    task_id_key: str

    def error(self, terminated: bool) -> InvocationRevokedError:
        return InvocationRevokedError(
            self.invocation_id,
            task_id_key=self.task_id_key,
            reason=self.reason,
            requested_by=self.requested_by,
            terminated=terminated,
        )


def pending_revokes(
    app: Pynenc, alias: str, invocation_ids: Iterable[str] | None = None
) -> list[PendingRevoke]:
    """The app's revoke requests (those of ``invocation_ids`` only, if given), each with
    its invocation's status, owner and task: one statement (one indexed read of an
    empty table while nothing is being revoked)."""
    from django.db.models import OuterRef, Subquery

    from pynenc_django.models import Invocation, RevokeRequest

    requests = RevokeRequest.objects.using(alias).for_app(app.app_id)
    if invocation_ids is not None:
        requests = requests.filter(invocation_id__in=list(invocation_ids))
    invocation = Invocation.objects.using(alias).filter(
        app_id=app.app_id, invocation_id=OuterRef("invocation_id")
    )
    rows = requests.annotate(
        status=Subquery(invocation.values("status")[:1]),
        owner=Subquery(invocation.values("status_runner_id")[:1]),
        task_id_key=Subquery(invocation.values("task_id_key")[:1]),
    ).values_list(
        "id",
        "invocation_id",
        "reason",
        "requested_by",
        "terminate",
        "status",
        "owner",
        "task_id_key",
    )
    return [
        PendingRevoke(pk, iid, why, who, kill, S(status) if status else None, owner, task or "")
        for pk, iid, why, who, kill, status, owner, task in rows
    ]


def drop_revoke_request(alias: str, request_id: int) -> None:
    """Forget a request whose invocation finished (or was purged) first."""
    from pynenc_django.models import RevokeRequest

    RevokeRequest.objects.using(alias).filter(pk=request_id).delete()
