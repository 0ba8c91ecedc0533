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

from pynenc_django.wakeup import ResultWaiter, current_result_waiter, result_waiter
from tests.orchestrator.test_statement_budget import counted

MAX_WAIT = 30.0


def noop() -> None:
    """A module-level task body."""


@pytest.fixture
def waiter() -> Iterator[ResultWaiter]:
    """The process's waiter, as the runner uses it (``filter_final`` consults it too)."""
    if connection.vendor != "postgresql":
        pytest.skip("results are announced on PostgreSQL only; elsewhere clients back off")
    result_waiter_ = result_waiter("default", max_wait=MAX_WAIT, listen=True)
    yield result_waiter_
    result_waiter_.close()


def finish(app: Pynenc, invocation_ids: list[str]) -> None:
    ctx = RunnerContext("W", runner_id="finisher")
    for invocation_id in invocation_ids:
        for status in (InvocationStatus.PENDING, InvocationStatus.RUNNING):
            app.orchestrator.set_invocation_status(invocation_id, status, ctx)
        app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.SUCCESS, ctx)


def finish_later(app: Pynenc, invocation_ids: list[str], delay: float) -> threading.Thread:
    def finish_them() -> None:
        time.sleep(delay)
        finish(app, invocation_ids)
        connections.close_all()

    thread = threading.Thread(target=finish_them)
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


def looked_up(statements: list[str]) -> int:
    """Invocation ids in the status look(s) among ``statements``."""
    return sum(sql.count("%s") - 4 for sql in statements if "i.status IN" in sql)


def test_group_looks_query_only_announced_invocations(
    app_instance: Pynenc, waiter: ResultWaiter
) -> None:
    ids = [inv.invocation_id for inv in app_instance.task(noop).parallelize([()] * 30).invocations]
    orchestrator = app_instance.orchestrator
    waiter.wait(ids)  # subscribe
    with counted() as sent:
        assert orchestrator.filter_final(ids) == []
    assert looked_up(sent) == 30  # the first look after subscribing covers them all

    finish(app_instance, ids[:3])
    waiter.wait(ids)  # returns on the announcements
    with counted() as sent:
        assert orchestrator.filter_final(ids) == ids[:3]
    assert looked_up(sent) == 3  # only what was announced

    orchestrator._local.covered = None  # as after FULL_LOOK_SEC, or another group
    with counted() as sent:
        assert orchestrator.filter_final(ids[3:]) == []
    assert looked_up(sent) == 27


def test_group_looks_are_full_while_not_subscribed(app_instance: Pynenc) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("results are announced on PostgreSQL only")
    waiter = result_waiter("default", max_wait=MAX_WAIT, listen=True)
    waiter.close()  # e.g. the LISTEN connection was lost
    ids = [inv.invocation_id for inv in app_instance.task(noop).parallelize([()] * 5).invocations]
    for _ in range(2):
        with counted() as sent:
            app_instance.orchestrator.filter_final(ids)
        assert looked_up(sent) == 5


def test_looks_trust_only_the_waiter_this_thread_waits_on(
    app_instance: Pynenc, waiter: ResultWaiter
) -> None:
    """Another configuration's waiter, subscribed by a thread that has gone, is read by
    nobody: a group's looks that trusted its announcements would miss final statuses."""
    other = result_waiter("default", max_wait=MAX_WAIT + 1, listen=True)
    subscriber = threading.Thread(target=other.wait, args=[["nothing"]])
    subscriber.start()
    subscriber.join()
    try:
        assert other.listening
        reader = threading.Thread(target=lambda: found.append(current_result_waiter("default")))
        found: list[ResultWaiter | None] = []
        reader.start()
        reader.join()
        assert found == [None]  # this thread never waited: full looks
        ids = [
            inv.invocation_id for inv in app_instance.task(noop).parallelize([()] * 5).invocations
        ]
        waiter.wait(ids)  # subscribe
        assert current_result_waiter("default") is waiter
        assert app_instance.orchestrator.filter_final(ids) == []
        finish(app_instance, ids[:2])
        waiter.wait(ids)  # returns on the announcements
        assert app_instance.orchestrator.filter_final(ids) == ids[:2]
    finally:
        other.close()


def test_each_configuration_gets_its_own_waiter() -> None:
    """Apps in one process with different wait settings never share (and so never
    inherit each other's) result waiters."""
    short = result_waiter("default", max_wait=0.1, listen=False)
    assert result_waiter("default", max_wait=0.1, listen=False) is short
    long = result_waiter("default", max_wait=5.0, listen=False)
    assert long is not short and long.max_wait == 5.0 and short.max_wait == 0.1
