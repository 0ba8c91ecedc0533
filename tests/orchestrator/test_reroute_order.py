"""A rerouted invocation keeps its place in its queue.

pynenc reroutes an invocation (REROUTED, then queued again) when its worker died or
stopped, when concurrency control deferred it, or when the database failed under it.
Queued again at the back, it would wait behind everything queued since, so "a killed
worker's task restarts within seconds" would only hold for a short queue.
"""

from __future__ import annotations

from pynenc import Pynenc
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

WORKER = RunnerContext("Racer", runner_id="reroute-worker")


def noop(i: int) -> int:
    """A module-level task body."""
    return i


def claim_one(app: Pynenc) -> str:
    found = list(app.orchestrator.get_invocations_to_run(1, WORKER))
    assert len(found) == 1
    return str(found[0].invocation_id)


def test_a_killed_and_rerouted_invocation_runs_before_later_ones(app_instance: Pynenc) -> None:
    task = app_instance.task(noop)
    ids = [str(task(i).invocation_id) for i in range(5)]
    assert claim_one(app_instance) == ids[0]

    app_instance.orchestrator.set_invocation_status(ids[0], InvocationStatus.KILLED, WORKER)
    app_instance.orchestrator.reroute_invocations({ids[0]}, WORKER)  # as a runner does

    assert [claim_one(app_instance) for _ in ids] == ids


def test_a_deferred_invocation_keeps_its_place_behind_the_one_it_waits_for(
    app_instance: Pynenc,
) -> None:
    """Concurrency control defers the second invocation of a key while the first runs;
    once the first is done, the deferred one is next, not behind later work."""
    keyed = app_instance.task(
        running_concurrency=ConcurrencyControlType.KEYS,
        key_arguments=("i",),
        reroute_on_concurrency_control=True,
    )(noop)
    first, second = keyed(7), keyed(7)
    later = [str(keyed(i).invocation_id) for i in range(3)]
    assert claim_one(app_instance) == first.invocation_id

    # The second is deferred (CONCURRENCY_CONTROLLED, then rerouted); the next is taken.
    assert claim_one(app_instance) == later[0]
    history = [
        h.status_record.status for h in app_instance.state_backend.get_history(second.invocation_id)
    ]
    assert InvocationStatus.CONCURRENCY_CONTROLLED in history
    for status in (InvocationStatus.RUNNING, InvocationStatus.SUCCESS):
        app_instance.orchestrator.set_invocation_status(first.invocation_id, status, WORKER)

    assert claim_one(app_instance) == second.invocation_id
    assert [claim_one(app_instance) for _ in later[1:]] == later[1:]


def test_a_reroute_that_cannot_queue_the_invocation_changes_nothing(
    app_instance: Pynenc,
) -> None:
    """REROUTED and the new message commit together: a REROUTED invocation without a
    message would never run again."""
    import pytest
    from django.db import OperationalError

    from tests.orchestrator.test_outcome_writes import failing

    invocation = app_instance.task(noop)(1)
    assert claim_one(app_instance) == invocation.invocation_id
    orchestrator = app_instance.orchestrator
    orchestrator.set_invocation_status(invocation.invocation_id, InvocationStatus.KILLED, WORKER)

    def queue_insert(sql: str) -> bool:
        return "INSERT INTO" in sql and "pynenc_broker_message" in sql

    with failing(queue_insert) as refused, pytest.raises(OperationalError):
        orchestrator.reroute_invocations({invocation.invocation_id}, WORKER)
    assert refused
    status = orchestrator.get_invocation_status_record(invocation.invocation_id).status
    assert status == InvocationStatus.KILLED, "REROUTED must not commit without its message"

    orchestrator.reroute_invocations({invocation.invocation_id}, WORKER)
    assert claim_one(app_instance) == invocation.invocation_id
