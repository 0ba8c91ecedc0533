"""PostgreSQL claims the usual invocation in one statement: the queue's head popped and
its invocation made PENDING (and RUNNING, for a worker that runs it at once) together,
or neither. Everything else (tasks under
concurrency control, tasks this process has not imported, stale messages, invocations a
worker runs as blocking ones) takes pynenc's general path, unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from pynenc import Pynenc
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.models import BrokerMessage
from pynenc_django.orchestrator.claim import ClaimCall, ClaimOptions
from tests import racers
from tests.orchestrator.test_process_races import race
from tests.orchestrator.test_statement_budget import counted

WORKER = RunnerContext("DjangoPersistentProcessRunner", runner_id="claim-worker")

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the one-statement claim is PostgreSQL's"
)


def noop() -> None:
    """A module-level task body (the racers import it)."""


def guarded() -> None:
    """A task under running concurrency control."""


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    built = app_instance_builder.build()
    built.state_backend.store_runner_context(WORKER)  # once per process, not per claim
    yield built
    built.purge()


def claim(app: Pynenc, blocking: set[str] | None = None, running: bool = False) -> Any:
    call = ClaimCall(ClaimOptions(run_at_once=running))
    return app.orchestrator._claim_from_queue("default", blocking or set(), WORKER, call)  # type: ignore[attr-defined]


def queued(app: Pynenc) -> int:
    return BrokerMessage.objects.filter(app_id=app.app_id).count()


def test_a_known_task_is_claimed_by_one_statement(app: Pynenc) -> None:
    invocation = app.task(noop)()
    with counted() as statements:
        claimed, reroute = claim(app)
    assert (claimed.invocation_id, reroute) == (invocation.invocation_id, None)
    assert len(statements) == 1 and statements[0].startswith("WITH head AS"), statements
    record = app.orchestrator.get_invocation_status_record(invocation.invocation_id)
    assert (record.status, record.runner_id) == (InvocationStatus.PENDING, WORKER.runner_id)
    assert queued(app) == 0
    history = app.state_backend.get_history(invocation.invocation_id)
    assert [h.status_record.status for h in history] == [
        InvocationStatus.REGISTERED,
        InvocationStatus.PENDING,
    ]
    assert history[-1].runner_context_id == WORKER.runner_id


def test_a_worker_that_runs_its_claim_at_once_claims_it_running(app: Pynenc) -> None:
    """Our worker loop runs what it claims at once: the claim makes the invocation
    RUNNING too (PENDING recorded on the way), and pynenc's RUNNING write that follows
    costs no statement but is reported as usual."""
    reported: list[InvocationStatus] = []
    report = app.orchestrator._report_status  # type: ignore[attr-defined]
    app.orchestrator._report_status = lambda i, s: (reported.append(s), report(i, s))  # type: ignore[attr-defined]
    invocation = app.task(noop)()
    with counted() as statements:
        claimed, _ = claim(app, running=True)
    assert len(statements) == 1
    record = app.orchestrator.get_invocation_status_record(invocation.invocation_id)
    assert (record.status, record.runner_id) == (InvocationStatus.RUNNING, WORKER.runner_id)

    with counted() as statements:
        claimed.run(WORKER)
    writes = [sql for sql in statements if '"pynenc_invocation"' in sql]
    assert len(writes) == 1, "the result and SUCCESS; RUNNING was written by the claim"
    assert reported == [
        InvocationStatus.PENDING,
        InvocationStatus.RUNNING,
        InvocationStatus.SUCCESS,
    ]
    history = app.state_backend.get_history(invocation.invocation_id)
    assert [(h.status_record.status, h.runner_context_id) for h in history] == [
        (InvocationStatus.REGISTERED, history[0].runner_context_id),
        (InvocationStatus.PENDING, WORKER.runner_id),
        (InvocationStatus.RUNNING, WORKER.runner_id),
        (InvocationStatus.SUCCESS, WORKER.runner_id),
    ]
    times = [h.status_record.timestamp for h in history]
    assert times == sorted(times) and len(set(times)) == 4


def test_only_the_claimer_skips_the_running_write(app: Pynenc) -> None:
    """Another runner's RUNNING is written, and so refused: the claimer owns it."""
    from pynenc.exceptions import InvocationStatusError

    invocation = app.task(noop)()
    claim(app, running=True)
    other = RunnerContext("DjangoPersistentProcessRunner", runner_id="other-worker")
    with pytest.raises(InvocationStatusError):
        app.orchestrator.set_invocation_status(
            invocation.invocation_id, InvocationStatus.RUNNING, other
        )
    history = app.state_backend.get_history(invocation.invocation_id)
    assert [h.status_record.status for h in history][-1] == InvocationStatus.RUNNING
    assert len(history) == 3


def test_an_empty_queue_costs_one_statement(app: Pynenc) -> None:
    app.task(noop)  # known here
    with counted() as statements:
        assert claim(app) is None
    assert len(statements) == 1


def test_an_unknown_task_is_left_to_the_general_path(app: Pynenc) -> None:
    """A worker that has not imported a task's module cannot know its concurrency
    control: the one statement declines and changes nothing."""
    from pynenc_django.orchestrator.rules import _SLOW_CLAIM

    invocation = app.task(noop)()
    tasks = dict(app._tasks)
    app._tasks.clear()
    try:
        outcome = app.orchestrator._claim_in_one_statement("default", set(), WORKER)  # type: ignore[attr-defined]
    finally:
        app._tasks.update(tasks)
    assert outcome is _SLOW_CLAIM
    assert queued(app) == 1
    assert app.orchestrator.get_invocation_status(invocation.invocation_id) == (
        InvocationStatus.REGISTERED
    )
    claimed, _ = claim(app)
    assert claimed.invocation_id == invocation.invocation_id


def test_a_task_under_concurrency_control_takes_the_general_path(app: Pynenc) -> None:
    app.task(noop)  # a task the fast path may claim is known too
    task = app.task(guarded, running_concurrency=ConcurrencyControlType.TASK)
    first, second = task(), task()
    with counted() as statements:
        claimed, _ = claim(app)
    assert claimed.invocation_id == first.invocation_id
    pops = [sql[:14] for sql in statements if "pynenc_broker_message" in sql]
    assert pops == ["WITH head AS (", "WITH popped AS"], "declined, then the general path"
    # The second may not run while the first is PENDING: controlled, not claimed.
    assert claim(app) == (None, None)
    status = app.orchestrator.get_invocation_status(second.invocation_id)
    assert status == InvocationStatus.CONCURRENCY_CONTROLLED_FINAL
    assert queued(app) == 0


@pytest.mark.parametrize("running", [False, True], ids=["pending", "running"])
def test_a_stale_message_is_consumed_by_the_one_statement(app: Pynenc, running: bool) -> None:
    """Taken meanwhile (a waiting worker ran it inside its wait): consumed by the claim
    statement itself, its invocation left alone."""
    invocation = app.task(noop)()
    app.orchestrator.set_invocation_status(
        invocation.invocation_id, InvocationStatus.PENDING, WORKER
    )
    app.orchestrator.set_invocation_status(
        invocation.invocation_id, InvocationStatus.RUNNING, WORKER
    )
    with counted() as statements:
        assert claim(app, running=running) == (None, None)
    assert len(statements) == 1, statements
    assert queued(app) == 0
    assert app.orchestrator.get_invocation_status(invocation.invocation_id) == (
        InvocationStatus.RUNNING
    )


def test_a_blocking_invocation_is_not_claimed_from_the_queue(app: Pynenc) -> None:
    """The worker runs it as a blocking invocation already: its message is dropped, its
    status untouched, as in pynenc's loop."""
    invocation = app.task(noop)()
    assert claim(app, {invocation.invocation_id}) == (None, None)
    assert queued(app) == 0
    assert app.orchestrator.get_invocation_status(invocation.invocation_id) == (
        InvocationStatus.REGISTERED
    )


@pytest.mark.parametrize("running", [False, True], ids=["pending", "running"])
def test_racing_processes_claim_each_invocation_exactly_once(app: Pynenc, running: bool) -> None:
    task = app.task(noop)
    ids = sorted(invocation.invocation_id for invocation in task.parallelize([()] * 300))
    outcomes = race(racers.claim_all, [(app.app_id, f"racer-{i}", running) for i in range(4)])
    status = InvocationStatus.RUNNING if running else InvocationStatus.PENDING

    claimed = sorted(invocation_id for _, batch, _ in outcomes for invocation_id in batch)
    assert claimed == ids, "every invocation claimed exactly once"
    assert all(fast for _, _, fast in outcomes), "the racers claimed by the one statement"
    assert queued(app) == 0
    for runner_id, batch, _ in outcomes:
        for invocation_id in batch:
            record = app.orchestrator.get_invocation_status_record(invocation_id)
            assert (record.status, record.runner_id) == (status, runner_id)


def test_the_pending_time_never_precedes_the_registration(app: Pynenc) -> None:
    """The claim's time is taken before its statement finds the message, so a submit
    that committed in between may carry a later time: PENDING then comes just after it,
    and the history stays in order (pynenc's conformance suites check it)."""
    from datetime import timedelta

    from pynenc_django.models import Invocation

    invocation = app.task(noop)()
    rows = Invocation.objects.filter(app_id=app.app_id, invocation_id=invocation.invocation_id)
    registered_at = rows.get().status_timestamp + timedelta(seconds=5)  # a clock ahead
    rows.update(status_timestamp=registered_at)
    claimed, _ = claim(app)
    assert claimed.invocation_id == invocation.invocation_id
    assert rows.get().status_timestamp == registered_at + timedelta(microseconds=1)
