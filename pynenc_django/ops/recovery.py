"""Putting work back when its owner is gone, or when a claim's outcome is unknown.

pynenc recovers such invocations from cron-driven services (``recover_running_invocations``
every 15 minutes after ``runner_considered_dead_after_minutes``, ``recover_pending_invocations``
every 5). :class:`~pynenc_django.runner.DjangoPersistentProcessRunner` does it within
seconds, with what this module provides:

* :func:`lost_invocations`: PENDING/RUNNING/PAUSED invocations owned by a worker of a
  ``DjangoPersistentProcessRunner`` whose heartbeat is older than the runner's
  ``django_runner_dead_after_sec`` (or missing: purged, or never written). Such workers'
  heartbeats are refreshed every ``django_heartbeat_interval_sec`` by their runner, or by
  the worker itself while it finishes an invocation after its runner died, so a stale one
  means the whole runner host is gone. Owners of other kinds (pynenc's own runners, whose
  heartbeats follow other rules) are left to pynenc's services. Also KILLED invocations
  nobody rerouted (a reroute cut in half by a database error, or by the death of the
  process doing it).
* :class:`PutBack`: KILLED then REROUTED through pynenc's status machine, resumable after a
  database error between the two steps. The KILLED transition is made *as the owner*
  (``runner_ctx`` carries its runner id), so it is a compare-and-set on the status *and*
  the owner: two runners recovering the same invocation cannot both win, and a runner
  that decided on stale information can never take an invocation that was rerouted and
  claimed by a live worker meanwhile. (pynenc's RUNNING_RECOVERY and PENDING_RECOVERY
  override ownership: their compare-and-set checks the status only.) A final invocation
  is never touched: KILLED is not allowed from a final status.
* :func:`note_connection_lost` / :func:`connection_losses`: a process-wide count of
  database connections lost mid-statement, kept by :func:`pynenc_django.db.retry_transient`
  (which retries them silently). A worker reads it around a claim: if it moved, the claim
  may have committed without the worker knowing, and the worker reconciles.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pynenc.exceptions import InvocationStatusError
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus

from pynenc_django.orchestrator import OWNED_STATUSES as ORCHESTRATOR_OWNED_STATUSES
from pynenc_django.utils import now_utc

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pynenc.app import Pynenc
    from pynenc.runner.runner_context import RunnerContext

logger = logging.getLogger("pynenc_django")

#: The statuses in which an invocation belongs to a runner (pynenc's ``requires_ownership``).
OWNED_STATUSES = [status.value for status in ORCHESTRATOR_OWNED_STATUSES]
#: The runner class name pynenc records for persistent-process workers' contexts.
WORKER_CLS = "PPRWorker"


# ---------------------------------------------------------------------------- lost claims

_losses = 0
_losses_lock = threading.Lock()


def note_connection_lost() -> None:
    """Count one database connection lost while a statement was in flight."""
    global _losses
    with _losses_lock:
        _losses += 1


def connection_losses() -> int:
    """How many connections this process lost mid-statement so far (only ever grows)."""
    return _losses


# ---------------------------------------------------------------------------- lost runners


@dataclass(frozen=True)
class Orphan:
    """An invocation whose owner is presumed dead."""

    invocation_id: InvocationId
    owner: str | None  # None: a KILLED invocation nobody rerouted
    status: str
    last_heartbeat: datetime | None  # None: the owner has no heartbeat row at all

    def heartbeat_age(self, now: datetime) -> str:
        if self.last_heartbeat is None:
            return "no heartbeat"
        return f"heartbeat {(now - self.last_heartbeat).total_seconds():.1f}s old"


def lost_invocations(
    app_id: str,
    db_alias: str,
    dead_after_sec: float,
    runner_classes: Iterable[str],
    exclude_owners: Iterable[str] = (),
) -> list[Orphan]:
    """In one statement, the invocations to put back after ``dead_after_sec``:

    * PENDING/RUNNING/PAUSED ones whose owner is a worker of one of ``runner_classes`` with
      no heartbeat newer than that (or none at all), ``exclude_owners`` aside;
    * KILLED ones that have stayed so that long (``owner`` None): KILLED lasts
      milliseconds, pynenc reroutes right after it, so one left behind means the reroute
      was cut by a database error or by the death of the process doing it.

    It walks the app's unfinished invocations of those statuses (few: one per busy worker)
    through the ``(app_id, status, ...)`` index and looks each owner up by its unique key.
    """
    from django.db.models import Exists, OuterRef, Q, Subquery

    from pynenc_django.models import Invocation, RunnerContextRecord, RunnerHeartbeat

    cutoff = now_utc() - timedelta(seconds=dead_after_sec)
    beats = RunnerHeartbeat.objects.using(db_alias).filter(
        app_id=app_id, runner_id=OuterRef("status_runner_id")
    )
    parents = RunnerContextRecord.objects.using(db_alias).filter(
        app_id=app_id, runner_id=OuterRef("parent_runner_id"), runner_cls__in=list(runner_classes)
    )
    workers = RunnerContextRecord.objects.using(db_alias).filter(
        Exists(parents),
        app_id=app_id,
        runner_id=OuterRef("status_runner_id"),
        runner_cls=WORKER_CLS,
    )
    orphaned = (
        Q(status__in=OWNED_STATUSES, status_runner_id__isnull=False)
        & ~Q(status_runner_id__in=list(exclude_owners))
        & Exists(workers)
        & ~Exists(beats.filter(last_heartbeat__gte=cutoff))
    )
    stalled = Q(status=InvocationStatus.KILLED.value, status_timestamp__lte=cutoff)
    rows = (
        Invocation.objects.using(db_alias)
        .for_app(app_id)
        .filter(status__in=[*OWNED_STATUSES, InvocationStatus.KILLED.value])
        .filter(orphaned | stalled)
        .annotate(last_beat=Subquery(beats.values("last_heartbeat")[:1]))
        .order_by("status_timestamp", "id")
        .values_list("invocation_id", "status_runner_id", "status", "last_beat")
    )
    return [Orphan(InvocationId(row[0]), *row[1:]) for row in rows]


class PutBack:
    """KILLED (as ``runner_ctx``'s runner) then REROUTED (as ``rerouted_by``, by default the
    same); call again after a database error.

    Returns True once rerouted, False when there was nothing to do: the invocation is no
    longer owned by ``runner_ctx``'s runner in PENDING/RUNNING/PAUSED (it finished, or
    another process recovered it, or it moved on), or someone else rerouted it first.
    Database errors propagate; the step already done is remembered.
    """

    def __init__(
        self,
        app: Pynenc,
        invocation_id: InvocationId,
        runner_ctx: RunnerContext,
        rerouted_by: RunnerContext | None = None,
    ) -> None:
        self.app = app
        self.invocation_id = invocation_id
        self.runner_ctx = runner_ctx
        self.rerouted_by = rerouted_by or runner_ctx
        self.killed = False
        self.done = False

    def __call__(self) -> bool:
        orchestrator: Any = self.app.orchestrator
        if not self.killed:
            try:
                orchestrator.set_invocation_status(
                    self.invocation_id, InvocationStatus.KILLED, self.runner_ctx
                )
            except InvocationStatusError as exc:
                self.done = True
                logger.debug(f"invocation:{self.invocation_id} not put back: {exc}")
                return False
            self.killed = True
        try:
            orchestrator.reroute_invocations({self.invocation_id}, self.rerouted_by)
        except InvocationStatusError as exc:
            self.done = True
            logger.debug(f"invocation:{self.invocation_id} was rerouted by another: {exc}")
            return False
        self.done = True
        return True
