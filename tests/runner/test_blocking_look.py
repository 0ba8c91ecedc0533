"""When a worker looks for blocking invocations (those others wait for, run first).

pynenc looks before every claim; our worker at most every
``django_blocking_check_interval_sec`` while it is busy, and not in the first claim after a
wait that new work ended: its queues were empty when it began to wait, so what it claims
then was announced since, and the look (one statement) would only delay it. Measured in
``bench/``: it was most of a short round trip's wake-up. Counted here on the worker's own
claims, in this process, as ``tests/orchestrator/test_statement_budget.py`` counts.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest
from pynenc import Pynenc
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.runner import DjangoPersistentProcessRunner
from pynenc_django.runner.worker import Worker
from tests.orchestrator.test_statement_budget import counted

BLOCKING_LOOK = "SELECT e.waited_id FROM "  # get_blocking_invocations' statement
INTERVAL = 3600.0  # django_blocking_check_interval_sec: no look twice in this test by time


def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def worker(configured_app: Any) -> Iterator[Worker]:
    app: Pynenc = configured_app(django_blocking_check_interval_sec=INTERVAL)
    runner = DjangoPersistentProcessRunner(app)
    parent = RunnerContext("DjangoPersistentProcessRunner", runner_id="look-runner")
    ctx = parent.new_child_context("Worker", runner_id="look-worker")
    runner._register_new_child_runner_context(ctx)
    lifeline, keep = multiprocessing.Pipe(duplex=False)
    yield Worker(app, runner, ctx, lifeline, os.getpid())
    lifeline.close()
    keep.close()


def looks(statements: list[str]) -> int:
    return sum(BLOCKING_LOOK in sql for sql in statements)


def test_a_claim_for_announced_work_skips_the_look_and_keeps_the_busy_schedule(
    worker: Worker,
) -> None:
    task = worker.app.task(add)
    task(1, 2)
    with counted() as statements:
        claimed, _ = worker._claim(announced=True)
    assert claimed is not None and looks(statements) == 0, statements

    # The busy worker's next claim looks (its first: no look found none yet), then not
    # again within the interval, announced or not.
    task(2, 3)
    with counted() as statements:
        claimed, _ = worker._claim(announced=False)
    assert claimed is not None and looks(statements) == 1, statements
    task(3, 4)
    task(4, 5)
    with counted() as statements:
        assert worker._claim(announced=False)[0] is not None
        assert worker._claim(announced=True)[0] is not None
    assert looks(statements) == 0, statements


def test_the_skipped_look_leaves_the_next_busy_claim_due(worker: Worker) -> None:
    """Skipping in an announced claim must not count as a look that found none."""
    task = worker.app.task(add)
    task(1, 2)
    task(2, 3)
    assert worker._claim(announced=True)[0] is not None
    with counted() as statements:
        assert worker._claim(announced=False)[0] is not None
    assert looks(statements) == 1, statements


def test_a_waited_invocation_is_still_run_first_by_a_busy_worker(worker: Worker) -> None:
    """What the look is for: an invocation another one waits for, queued behind others,
    is claimed before them by the next claim that looks."""
    app = worker.app
    task = app.task(add)
    waiter = task(0, 0)
    queued = [task(i, i) for i in range(1, 4)]
    waited = task(9, 9)
    app.orchestrator.waiting_for_results(waiter.invocation_id, [waited.invocation_id])
    claimed, _ = worker._claim(announced=True)  # the queue's head: no look
    assert claimed is not None and claimed.invocation_id == waiter.invocation_id
    claimed, _ = worker._claim(announced=False)
    assert claimed is not None and claimed.invocation_id == waited.invocation_id, (
        claimed.invocation_id,
        [q.invocation_id for q in queued],
    )
