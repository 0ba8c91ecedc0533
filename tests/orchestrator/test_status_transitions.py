"""The one-UPDATE status transition agrees with pynenc's state machine, everywhere.

``DjangoOrchestrator._atomic_status_transition`` first tries an UPDATE whose WHERE
clause encodes which statuses (and owners) may move to the target; only when that
matches nothing does it read, and let pynenc's ``status_record_transition`` decide and
raise. Every (status, owner) x (target, caller) pair must end as pynenc's own function
says: the same new status and owner, or the same kind of error with the row untouched.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, tzinfo

import pytest
from pynenc import Pynenc
from pynenc.exceptions import InvocationStatusError
from pynenc.invocation.status import (
    InvocationStatus,
    InvocationStatusRecord,
    status_record_transition,
)

OWNERS = (None, "runner-a", "runner-b")
CALLERS = (None, "runner-a")


def noop() -> None:
    """A module-level task body."""


def expected(
    current: InvocationStatus, owner: str | None, target: InvocationStatus, caller: str | None
) -> tuple[InvocationStatus, str | None] | type[Exception]:
    try:
        record = status_record_transition(InvocationStatusRecord(current, owner), target, caller)
    except InvocationStatusError as exc:
        return type(exc)
    return record.status, record.runner_id


def test_every_transition_matches_pynenc(app_instance: Pynenc) -> None:
    from pynenc_django.models import Invocation

    invocation = app_instance.task(noop)()
    row = Invocation.objects.filter(
        app_id=app_instance.app_id, invocation_id=invocation.invocation_id
    )
    orchestrator = app_instance.orchestrator
    mismatches = []
    for current, owner, target, caller in itertools.product(
        InvocationStatus, OWNERS, InvocationStatus, CALLERS
    ):
        row.update(status=current.value, status_runner_id=owner)
        want = expected(current, owner, target, caller)
        try:
            record = orchestrator._atomic_status_transition(
                invocation.invocation_id, target, caller
            )
            got: object = (record.status, record.runner_id)
        except InvocationStatusError as exc:
            got = type(exc)
        stored = row.values_list("status", "status_runner_id").get()
        if isinstance(want, tuple):
            consistent = stored == (want[0].value, want[1])
        else:
            consistent = stored == (current.value, owner)  # a refused change writes nothing
        if got != want or not consistent:
            mismatches.append((current, owner, target, caller, want, got, stored))
    assert not mismatches, "\n".join(map(str, mismatches[:20]))


def test_a_transition_stamped_early_still_comes_after_the_status_it_replaces(
    app_instance: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers race on one invocation: the statement that waited behind the other's
    (for its row lock, or SQLite's write lock) took its time before that one committed.
    Its status time, and so its history row, must still come after (pynenc's conformance
    check found KILLED recorded before the RUNNING it replaced)."""
    from pynenc.invocation import status as status_module
    from pynenc.runner.runner_context import RunnerContext

    app = app_instance
    ctx = RunnerContext("DjangoPersistentProcessRunner", runner_id="runner-a")
    invocation_id = app.task(noop)().invocation_id
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.PENDING, ctx)
    pending_at = app.orchestrator.get_invocation_status_record(invocation_id).timestamp
    early = pending_at - timedelta(seconds=5)

    class EarlyClock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> EarlyClock:
            return cls.fromtimestamp(early.timestamp(), tz)

    monkeypatch.setattr(status_module, "datetime", EarlyClock)
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.RUNNING, ctx)
    monkeypatch.undo()

    running_at = app.orchestrator.get_invocation_status_record(invocation_id).timestamp
    assert running_at > pending_at
    history = sorted(app.state_backend.get_history(invocation_id), key=lambda h: h.timestamp)
    assert [h.status_record.status for h in history] == [
        InvocationStatus.REGISTERED,
        InvocationStatus.PENDING,
        InvocationStatus.RUNNING,
    ]
