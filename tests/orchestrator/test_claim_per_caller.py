"""A claim's state belongs to its caller, never to the orchestrator: pynenc's thread
runners share one orchestrator between threads, and each claims with its own
:class:`ClaimOptions` and gets its own :class:`ClaimResult` back.

Two threads of one process share one app (so one orchestrator and one broker) and claim
at the same time, on the real database: one as our worker loop does (it runs what it
claims at once, was woken for new work and backs off the look for blocking invocations),
the other with pynenc's defaults. Neither's options nor outcome leaks into the other's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from django.db import connection, connections
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.models import BrokerMessage
from pynenc_django.orchestrator.claim import ClaimOptions, ClaimResult

EAGER = RunnerContext("DjangoPersistentProcessRunner", runner_id="eager-worker")
PLAIN = RunnerContext("DjangoPersistentProcessRunner", runner_id="plain-worker")
#: As our worker loop claims; its backoff is long enough to last the whole test.
EAGER_OPTIONS = ClaimOptions(run_at_once=True, work_announced=True, blocking_check_interval=3600)
ROUNDS = 8


def alone(x: int) -> int:
    """Queued to ``alone``, one message at a time."""
    return x


def crowded(x: int) -> int:
    """Queued to ``crowded``, always two or more messages."""
    return x


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    built = app_instance_builder.custom_config(queues=["alone", "crowded"]).build()
    for ctx in (EAGER, PLAIN):
        built.state_backend.store_runner_context(ctx)
    yield built
    built.purge()


def in_two_threads(
    eager: Callable[[], list[ClaimResult]], plain: Callable[[], list[ClaimResult]]
) -> tuple[list[ClaimResult], list[ClaimResult]]:
    """Run both callers at once, each in its own thread (and so its own connection)."""

    def closing(caller: Callable[[], list[ClaimResult]]) -> list[ClaimResult]:
        try:
            return caller()
        finally:
            connections.close_all()  # this thread's

    with ThreadPoolExecutor(max_workers=2) as pool:
        eager_results, plain_results = pool.submit(closing, eager), pool.submit(closing, plain)
        return eager_results.result(timeout=120), plain_results.result(timeout=120)


def test_concurrent_callers_each_get_their_own_options_and_outcome(app: Pynenc) -> None:
    """Round after round, both claim at the same moment: the eager caller takes its
    queue's only message (the last one), straight into RUNNING where the one-statement
    claim runs (PostgreSQL), and carries its blocking-look backoff from claim to claim;
    the plain caller takes one of several messages (not the last), PENDING, with no
    backoff. Any of that kept on the shared orchestrator would mix the two up."""
    alone_task = app.task(alone, queue="alone")
    crowded_task = app.task(crowded, queue="crowded")
    crowded_task.parallelize([(i,) for i in range(ROUNDS + 2)])
    together = threading.Barrier(2, timeout=60)

    def eager() -> list[ClaimResult]:
        results, options = [], EAGER_OPTIONS
        for round_ in range(ROUNDS):
            alone_task(round_)  # its queue's only message
            together.wait()
            result = app.orchestrator.claim(  # type: ignore[attr-defined]
                EAGER, options, queue_provider=lambda: ("alone",)
            )
            options = replace(options, no_blocking_until=result.no_blocking_until)
            results.append(result)
        return results

    def plain() -> list[ClaimResult]:
        results = []
        for _ in range(ROUNDS):
            together.wait()
            results.append(
                app.orchestrator.claim(  # type: ignore[attr-defined]
                    PLAIN, ClaimOptions(), queue_provider=lambda: ("crowded",)
                )
            )
        return results

    started = time.monotonic()
    eager_results, plain_results = in_two_threads(eager, plain)

    running = connection.vendor == "postgresql"  # the one-statement claim's option
    eager_status = InvocationStatus.RUNNING if running else InvocationStatus.PENDING
    backoff = eager_results[0].no_blocking_until
    assert backoff > started + 3000, "the eager caller found no blocking invocation"
    for result in eager_results:
        [invocation] = result.invocations
        assert invocation.call.task.task_id == alone_task.task_id
        assert result.claimed_the_last_message is True
        assert result.no_blocking_until == backoff, "carried from claim to claim"
        status = app.orchestrator.get_invocation_status(invocation.invocation_id)
        assert status == eager_status
    for result in plain_results:
        [invocation] = result.invocations
        assert invocation.call.task.task_id == crowded_task.task_id
        assert result.claimed_the_last_message is False, "more were queued"
        assert result.no_blocking_until == 0.0, "pynenc's defaults: no backoff"
        status = app.orchestrator.get_invocation_status(invocation.invocation_id)
        assert status == InvocationStatus.PENDING


def test_one_callers_blocking_backoff_does_not_hold_back_another(app: Pynenc) -> None:
    """A caller whose last look found no blocking invocation skips the look until its
    backoff ends; another caller of the same orchestrator, without that backoff, looks
    at the same moment and claims the invocation that has appeared meanwhile."""
    orchestrator: Any = app.orchestrator
    found = orchestrator.claim(EAGER, EAGER_OPTIONS, queue_provider=lambda: ("alone",))
    assert found.invocations == () and found.no_blocking_until > time.monotonic() + 3000
    backed_off = replace(EAGER_OPTIONS, no_blocking_until=found.no_blocking_until)

    waited = app.task(crowded, queue="crowded")(1)  # someone waits for it, so it goes first
    BrokerMessage.objects.filter(app_id=app.app_id, invocation_id=waited.invocation_id).delete()
    app.orchestrator.blocking_control.waiting_for_results("a-waiter", [waited.invocation_id])
    together = threading.Barrier(2, timeout=60)

    def claimer(ctx: RunnerContext, options: ClaimOptions) -> Callable[[], list[ClaimResult]]:
        def claim() -> list[ClaimResult]:
            together.wait()
            return [orchestrator.claim(ctx, options, queue_provider=lambda: ("crowded",))]

        return claim

    [eager], [plain] = in_two_threads(
        claimer(EAGER, backed_off), claimer(PLAIN, replace(EAGER_OPTIONS, run_at_once=False))
    )
    assert eager.invocations == (), "its backoff holds: no look for blocking invocations"
    assert eager.no_blocking_until == found.no_blocking_until
    assert [i.invocation_id for i in plain.invocations] == [waited.invocation_id]
    assert plain.no_blocking_until == 0.0, "it found one: no backoff"
    record = app.orchestrator.get_invocation_status_record(waited.invocation_id)
    assert (record.status, record.runner_id) == (InvocationStatus.PENDING, PLAIN.runner_id)
