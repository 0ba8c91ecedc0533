"""Orchestrator on the Django ORM: invocation status, ownership, blocking edges, runner
heartbeats and the cluster-wide atomic-service gate.

Every status change is one conditional UPDATE whose WHERE clause is pynenc's state machine
(or, when that cannot decide, a read-validate-write under a row lock), so two processes
can never both move the same invocation from the same status, on any database and any
isolation level. The statements that run for every invocation (claims, transitions,
status reads) are fixed SQL rather than ORM queries built anew each time: see
``tests/orchestrator/test_statement_budget.py`` for what one invocation costs.

One module per job, each a mixin of :class:`DjangoOrchestrator`:

* :mod:`.registration`: new invocations stored, registered and queued;
* :mod:`.routing`: which queue and priority, now or at a due time (delays, retry
  backoff), and expiry;
* :mod:`.claim`: queued (or awaited) invocations claimed by workers, and rerouted; each
  caller claims with its own :class:`ClaimOptions` and gets a :class:`ClaimResult` back;
* :mod:`.transitions`: status changes, results and their history;
* :mod:`.reads`: status look-ups, filters and pages;
* :mod:`.runners`: heartbeats, recovery queries and retention;
* :mod:`.atomic_service`: the cluster-wide atomic-service gate;
* :mod:`.blocking`: waiter -> waited edges (pynenc's blocking control);
* :mod:`.rules`: pynenc's state machine and concurrency rules as the SQL uses them;
* :mod:`.core`: what they all stand on (settings, per-process state, database access).
"""

from __future__ import annotations

from pynenc_django.orchestrator.atomic_service import AtomicServiceMixin
from pynenc_django.orchestrator.blocking import DjangoBlockingControl
from pynenc_django.orchestrator.claim import ClaimMixin, ClaimOptions, ClaimResult
from pynenc_django.orchestrator.reads import ClientResultsWaiter, ReadsMixin
from pynenc_django.orchestrator.registration import RegistrationMixin
from pynenc_django.orchestrator.routing import RoutingMixin
from pynenc_django.orchestrator.rules import OWNED_STATUSES
from pynenc_django.orchestrator.runners import RunnersMixin
from pynenc_django.orchestrator.transitions import TransitionsMixin


class DjangoOrchestrator(
    RoutingMixin,
    RegistrationMixin,
    ClaimMixin,
    TransitionsMixin,
    ReadsMixin,
    RunnersMixin,
    AtomicServiceMixin,
):
    """pynenc orchestrator backed by the project's database through the Django ORM.

    Its settings, state and database access are :class:`.core.OrchestratorCore`'s, on
    which every mixin stands; the mixins come before pynenc's ``BaseOrchestrator`` in the
    MRO, so their methods override pynenc's."""


__all__ = [
    "OWNED_STATUSES",
    "ClaimOptions",
    "ClaimResult",
    "ClientResultsWaiter",
    "DjangoBlockingControl",
    "DjangoOrchestrator",
]
