"""``await invocation.async_result()`` outside any runner (an async view, a script under
``asyncio.run``) waits as ``.result`` does, for the final status to be announced (PostgreSQL's
``NOTIFY``, SQLite's signal file, MariaDB's same-host hint), in a thread: the event loop goes
on meanwhile. pynenc's own async wait sleeps ``invocation_wait_results_sleep_time_sec``
between looks (30 s here), and the first wait of the result loop used to block the event loop
until the final status."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from pynenc import Pynenc
from pynenc.invocation.dist_invocation import DistributedInvocation
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.wakeup import ResultWaiter

WORKER = RunnerContext("DjangoPersistentProcessRunner", runner_id="async-result-worker")
#: pynenc's sleep between looks: a wait that ends well before it was woken.
LONG = 30.0
#: The task ends this long after the client starts waiting.
RUNS_AFTER = 1.0


def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    built = app_instance_builder.custom_config(
        runner_cls="DjangoPersistentProcessRunner",
        invocation_wait_results_sleep_time_sec=LONG,
    ).build()
    yield built
    built.purge()


def run_in_a_thread(invocation: DistributedInvocation) -> None:
    """The worker's side: claimed already, run (RUNNING, the task, SUCCESS)."""
    try:
        invocation.run(WORKER)
    finally:
        connections.close_all()


async def await_result(invocation: DistributedInvocation) -> tuple[Any, float, float]:
    """The result, how long it took, and the longest the event loop went without a turn."""
    turns: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            turns.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker has its first turn
    started = time.monotonic()
    value = await invocation.async_result()
    elapsed = time.monotonic() - started
    turns.append(time.monotonic())
    stop.set()
    await ticking
    return value, elapsed, max(b - a for a, b in itertools.pairwise(turns))


def test_async_result_is_woken_by_the_final_status_and_never_blocks_the_event_loop(
    app: Pynenc,
) -> None:
    invocation = app.task(add)(1, 2)
    # As in a long-lived process: subscribed (or watching the signal file) already, so a
    # wait in the event loop's thread would block it, not return at once to look.
    app.runner.wait_for_client_results([invocation.invocation_id])
    [claimed] = list(app.orchestrator.get_invocations_to_run(1, WORKER))
    worker = threading.Timer(RUNS_AFTER, run_in_a_thread, args=(claimed,))
    worker.start()
    try:
        value, elapsed, longest_gap = asyncio.run(await_result(invocation))
    finally:
        worker.join()
    assert value == 3
    assert RUNS_AFTER <= elapsed < LONG / 2, "woken by the final status, not a 30 s sleep"
    # Blocked, the loop would have gone without a turn until the final status (1 s).
    assert longest_gap < RUNS_AFTER / 2, f"the event loop was blocked for {longest_gap:.2f} s"


def test_a_wait_goes_on_backing_off_whichever_thread_makes_its_next_call(app: Pynenc) -> None:
    """``async_result`` makes each wait in whichever thread of a pool is free: the backoff
    follows the awaited invocations, not the thread, so concurrent async waits do not all
    look every 2 ms (here with nothing announced: the backoff's sleeps alone)."""
    invocation_id = app.task(add)(1, 2).invocation_id
    waiter = ResultWaiter("default", max_wait=LONG, listen=False)
    for _ in range(3):
        thread = threading.Thread(target=waiter.wait, args=([invocation_id],))
        thread.start()
        thread.join()
    assert waiter._backoff.get(frozenset([invocation_id])) == ResultWaiter.MIN_WAIT * 2**3
    waiter.wait([invocation_id, "another"])  # another wait starts from its own shortest
    assert waiter._backoff.get(frozenset([invocation_id, "another"])) == ResultWaiter.GROUP_WAIT * 2
