"""Concurrency guarantees proven with real processes racing on the configured database.

Threads share one interpreter; these tests spawn fresh interpreters with their own
connections, as runners on several hosts would, on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import AtomicServiceExecutionStatus

from tests import racers

RACERS = 16


def noop() -> None:
    """A task for registering invocations; pynenc needs module-level functions."""


def race(target: Callable[..., None], argument_sets: list[tuple[Any, ...]]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(argument_sets))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in argument_sets]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return outcomes


def test_atomic_service_gate_admits_one_of_16_processes(app_instance: Pynenc) -> None:
    """The gate holds on every vendor, MariaDB included (no partial unique index there)."""
    outcomes = race(racers.claim_atomic_service, [(app_instance.app_id, i) for i in range(RACERS)])

    winners = [index for index, accepted in outcomes if accepted]
    assert len(winners) == 1
    active = app_instance.orchestrator.get_active_atomic_service_executions()
    assert [e.atomic_service_run_id for e in active] == [f"run-{winners[0]:02d}"]
    now = datetime.now(UTC)
    executions = app_instance.orchestrator.get_atomic_service_executions_in_timerange(
        now - timedelta(minutes=5), now + timedelta(minutes=1)
    )
    blocked = [e for e in executions if e.status == AtomicServiceExecutionStatus.BLOCKED]
    assert len(blocked) == RACERS - 1
    assert all(f"prior_running:run-{winners[0]:02d}" in e.reason for e in blocked)


def test_broker_never_hands_a_message_to_two_processes(app_instance: Pynenc) -> None:
    ids = [f"inv-{i:04d}" for i in range(400)]
    app_instance.broker.route_invocations(ids, "default", 0.0)  # type: ignore[arg-type]

    outcomes = race(racers.pop_messages, [(app_instance.app_id, "default")] * 4)

    popped = [invocation_id for batch in outcomes for invocation_id in batch]
    assert sorted(popped) == ids, "every message delivered exactly once"
    assert app_instance.broker.count_invocations() == 0


def test_status_transition_is_won_by_exactly_one_process(app_instance: Pynenc) -> None:
    invocation = app_instance.task(noop)()
    contenders = [(app_instance.app_id, invocation.invocation_id, f"runner-{i}") for i in range(8)]

    outcomes = race(racers.transition, contenders)

    assert sorted(result for _, result in outcomes).count("won") == 1
    record = app_instance.orchestrator.get_invocation_status_record(invocation.invocation_id)
    assert record.status == InvocationStatus.PENDING
    assert record.runner_id in {runner for runner, result in outcomes if result == "won"}


def registered_once(account: str, round_: int) -> None:
    """A task under registration concurrency control (KEYS on ``account``)."""


def test_registration_concurrency_gives_racing_callers_one_invocation_per_key(
    app_instance: Pynenc,
) -> None:
    """pynenc looks for a REGISTERED invocation of the key, then registers one if none:
    racing callers must still end up sharing one invocation per key."""
    accounts = [f"acc{k}" for k in range(5)]

    outcomes = race(racers.register_keyed, [(app_instance.app_id, accounts)] * 8)

    handed_out = {invocation_id for ids in outcomes for invocation_id in ids}
    from pynenc_django.models import Invocation

    registered = Invocation.objects.for_app(app_instance.app_id).filter(status="registered")
    assert registered.count() == len(accounts) == len(handed_out), sorted(handed_out)
    assert app_instance.broker.count_invocations() == len(accounts)
