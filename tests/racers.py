"""Entry points for spawned processes that race each other on the real database.

Each process is a fresh interpreter: it sets Django up from ``DJANGO_SETTINGS_MODULE``
(inherited), builds its own pynenc app on the Django backends, waits at a barrier so
all racers hit the database together, and reports what it observed through a queue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _app(app_id: str) -> Any:
    import django

    django.setup()
    from pynenc import PynencBuilder

    return PynencBuilder().app_id(app_id).django().build()


def claim_atomic_service(app_id: str, index: int, barrier: Any, results: Any) -> None:
    from pynenc.orchestrator.atomic_service import AtomicServiceRun

    app = _app(app_id)
    run = AtomicServiceRun(runner_id=f"racer-{index:02d}", atomic_service_run_id=f"run-{index:02d}")
    app.orchestrator.register_runner_heartbeats([run.atomic_service_id.runner_id], True)
    barrier.wait()
    accepted = app.orchestrator.record_atomic_service_execution_start(run, datetime.now(UTC))
    results.put((index, accepted))


def pop_messages(app_id: str, queue: str, barrier: Any, results: Any) -> None:
    app = _app(app_id)
    barrier.wait()
    popped = []
    while (invocation_id := app.broker.retrieve_invocation(queue)) is not None:
        popped.append(str(invocation_id))
    results.put(popped)


def transition(app_id: str, invocation_id: str, runner_id: str, barrier: Any, results: Any) -> None:
    from pynenc.exceptions import PynencError
    from pynenc.invocation.status import InvocationStatus

    app = _app(app_id)
    barrier.wait()
    try:
        app.orchestrator._atomic_status_transition(
            invocation_id, InvocationStatus.PENDING, runner_id
        )
        results.put((runner_id, "won"))
    except PynencError as exc:
        results.put((runner_id, type(exc).__name__))


def claim_and_hang(app_id: str, ready: Any) -> None:
    """Claim a queued invocation, then hang *inside* the claim transaction, after the
    broker pop and before PENDING is written, until the test kills this process."""
    import time

    from pynenc.runner.runner_context import RunnerContext

    app = _app(app_id)

    def hang(*args: Any, **kwargs: Any) -> None:
        ready.set()
        time.sleep(3600)

    app.state_backend.get_invocation = hang  # type: ignore[method-assign]  # read after the pop
    list(app.orchestrator.get_invocations_to_run(1, RunnerContext("Racer", runner_id="doomed")))


def claim_all(app_id: str, runner_id: str, running: bool, barrier: Any, results: Any) -> None:
    """Claim invocations of ``noop`` until the queue is empty (straight into RUNNING if
    ``running``); report them, and whether every claim statement was the one-statement
    claim."""
    from django.db import connection
    from pynenc.runner.runner_context import RunnerContext

    from pynenc_django.orchestrator.claim import ClaimOptions

    app = _app(app_id)
    from tests.orchestrator.test_one_statement_claim import noop  # after Django's setup

    app.task(noop)  # known here: the fast path may claim it
    options = ClaimOptions(run_at_once=running)
    worker = RunnerContext("Racer", runner_id=runner_id)
    statements: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    claimed = []
    barrier.wait()
    with connection.execute_wrapper(count):
        while found := app.orchestrator.claim(worker, options).invocations:
            claimed += [str(invocation.invocation_id) for invocation in found]
    # Not the maintenance a claim may do on its way (QueueVacuum's and FirstAnalyze's looks
    # at pg_stat_user_tables, which name the queue's table, and what they run).
    maintenance = ("SELECT relname", "VACUUM", "ANALYZE")
    pops = [
        sql
        for sql in statements
        if "pynenc_broker_message" in sql and not sql.startswith(maintenance)
    ]
    fast = bool(pops) and all(sql.startswith("WITH head AS") for sql in pops)
    results.put((runner_id, claimed, fast))


def register_keyed(app_id: str, accounts: list[str], barrier: Any, results: Any) -> None:
    """Call ``registered_once`` (registration concurrency KEYS on ``account``) for every
    account, several rounds; report the invocation ids handed back."""
    from pynenc import ConcurrencyControlType

    app = _app(app_id)
    from tests.orchestrator.test_process_races import registered_once  # after Django's setup

    keys = ConcurrencyControlType.KEYS
    task = app.task(registration_concurrency=keys, key_arguments=("account",))(registered_once)
    barrier.wait()
    got = [str(task(account, round_).invocation_id) for round_ in range(5) for account in accounts]
    results.put(got)


def beat(app_id: str, runner_id: str, results: Any) -> None:
    """Refresh ``runner_id``'s heartbeat (a write to the row the test's process may hold)."""
    app = _app(app_id)
    app.orchestrator.register_runner_heartbeats([runner_id])
    results.put("beat")


def beat_rounds(
    app_id: str, runner_ids: list[str], rounds: int, barrier: Any, results: Any
) -> None:
    """Refresh the heartbeats of ``runner_ids`` ``rounds`` times, as a runner parent writes
    its workers' while each worker writes its own; report the rounds done."""
    app = _app(app_id)
    barrier.wait()
    for _ in range(rounds):
        app.orchestrator.register_runner_heartbeats(runner_ids)
    results.put(rounds)
