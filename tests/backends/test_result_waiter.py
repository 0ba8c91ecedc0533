"""A client waiting for a result wakes on PostgreSQL's announcement of the final status
(the status trigger's ``NOTIFY``), not on a timer. Each wait here may last 30 s
(``max_wait``); returning well before that can only be the announcement."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection, connections
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.wakeup import ResultWaiter

MAX_WAIT = 30.0


def noop() -> None:
    """A module-level task body."""


@pytest.fixture
def waiter() -> Iterator[ResultWaiter]:
    if connection.vendor != "postgresql":
        pytest.skip("results are announced on PostgreSQL only; elsewhere clients back off")
    result_waiter = ResultWaiter("default", max_wait=MAX_WAIT, listen=True)
    yield result_waiter
    result_waiter.close()


def finish_later(app: Pynenc, invocation_ids: list[str], delay: float) -> threading.Thread:
    def finish() -> None:
        time.sleep(delay)
        ctx = RunnerContext("W", runner_id="finisher")
        for invocation_id in invocation_ids:
            for status in (InvocationStatus.PENDING, InvocationStatus.RUNNING):
                app.orchestrator.set_invocation_status(invocation_id, status, ctx)
            app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.SUCCESS, ctx)
        connections.close_all()

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def timed_wait(waiter: ResultWaiter, invocation_ids: list[str]) -> float:
    started = time.monotonic()
    waiter.wait(invocation_ids)
    return time.monotonic() - started


def test_wait_ends_when_the_final_status_is_announced(
    app_instance: Pynenc, waiter: ResultWaiter
) -> None:
    invocation = app_instance.task(noop)()
    waiter.wait([invocation.invocation_id])  # subscribes; returns at once to look
    thread = finish_later(app_instance, [invocation.invocation_id], delay=0.3)
    elapsed = timed_wait(waiter, [invocation.invocation_id])
    thread.join()
    assert elapsed < MAX_WAIT / 2
    assert invocation.status == InvocationStatus.SUCCESS


def test_announcements_for_other_invocations_are_remembered(
    app_instance: Pynenc, waiter: ResultWaiter
) -> None:
    """B finishes first, while the client waits for A: B's announcement arrives during
    A's wait, so waiting for B afterwards must not block (nothing more will come)."""
    a, b = app_instance.task(noop)(), app_instance.task(noop)()
    waiter.wait([a.invocation_id])  # subscribe
    thread = finish_later(app_instance, [b.invocation_id, a.invocation_id], delay=0.3)
    assert timed_wait(waiter, [a.invocation_id]) < MAX_WAIT / 2
    thread.join()
    assert timed_wait(waiter, [b.invocation_id]) < MAX_WAIT / 2
