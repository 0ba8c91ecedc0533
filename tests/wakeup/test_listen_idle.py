"""A process that waited for a result keeps its ``LISTEN`` connection only while it goes
on waiting (``django_result_listen_idle_sec``). PostgreSQL keeps every notification of
the cluster until each listener has read it: a subscription nobody reads (a web process
that waited once) held the server's queue, 0.24 % of it per 60,000 unread announcements
on the development machine, and a full queue fails every ``NOTIFY``, that is every
submit."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from pynenc import Pynenc

from pynenc_django.wakeup import ResultWaiter, result_waiter
from tests.runner.conftest import wait_until
from tests.wakeup.test_result_waiter import MAX_WAIT, finish_later, noop, timed_wait


@pytest.fixture(autouse=True)
def _postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("results are announced on PostgreSQL only; elsewhere clients back off")


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return bool(cursor.fetchone()[0])


def listening_backend(waiter: ResultWaiter) -> int:
    assert waiter.listening
    return int(waiter._conn.info.backend_pid)


def wait_for_one(app: Pynenc, waiter: ResultWaiter, finish_after: float = 0.05) -> float:
    """Submit one invocation, finish it from another thread, wait for its announcement."""
    invocation = app.task(noop)()
    if not waiter.listening:
        waiter.wait([invocation.invocation_id])  # subscribes; returns at once to look
    thread = finish_later(app, [invocation.invocation_id], delay=finish_after)
    elapsed = timed_wait(waiter, [invocation.invocation_id])
    thread.join()
    return elapsed


def test_an_unused_subscription_is_closed_and_the_next_wait_subscribes_again(
    app_instance: Pynenc,
) -> None:
    waiter = result_waiter("default", max_wait=MAX_WAIT, listen=True, idle_close=0.5)
    try:
        assert wait_for_one(app_instance, waiter) < MAX_WAIT / 2
        pid = listening_backend(waiter)
        assert backend_alive(pid)

        wait_until(lambda: not waiter.listening, 5, "the idle subscription was kept")
        wait_until(lambda: not backend_alive(pid), 5, f"backend {pid} still connected")

        epoch = waiter.epoch
        assert wait_for_one(app_instance, waiter, finish_after=0.3) < MAX_WAIT / 2
        assert waiter.epoch == epoch + 1  # subscribed again, and woken by its announcement
    finally:
        waiter.close()


def test_a_process_that_goes_on_waiting_keeps_its_subscription(app_instance: Pynenc) -> None:
    """Waits closer together than ``idle_close`` never pay a new subscription (a new
    connection and its ``LISTEN``), whatever their own length."""
    waiter = result_waiter("default", max_wait=MAX_WAIT, listen=True, idle_close=1.0)
    try:
        wait_for_one(app_instance, waiter)
        pid, epoch = listening_backend(waiter), waiter.epoch
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            time.sleep(0.4)
            assert wait_for_one(app_instance, waiter) < MAX_WAIT / 2
        assert (listening_backend(waiter), waiter.epoch) == (pid, epoch)
    finally:
        waiter.close()
