"""A runner wakes one idle worker per enqueue, and as many as a burst keeps busy
(:mod:`pynenc_django.wakeup.dispatch`).

Where every enqueue is announced (PostgreSQL, SQLite), each idle worker used to hear
every announcement and claim: four idle workers made four claims per task, three of them
empty. Every claim of the runner's workers is logged here (the test project's
``CLAIM_LOG_ENV`` hook), and the tasks record their own start, end and pid.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from django.db import connection
from pynenc import Pynenc

from pynenc_django.vendors import vendor_of
from tests.project.jobs.apps import CLAIM_LOG_ENV
from tests.runner.conftest import Runners, wait_all_success

WORKERS = 4
SEQUENTIAL = 20
BURST = 24
SLEEP_SEC = 0.5


@pytest.fixture(autouse=True)
def announced_everywhere() -> None:
    vendor = vendor_of(connection)
    if not (vendor.notifies or vendor.signals_reach_every_host):
        pytest.skip("MariaDB/MySQL: a host hears only its own enqueues; each worker backs off")


def claims(log: Path, workers: set[int], task_id: str) -> Counter[tuple[int, int]]:
    """(pid, invocations of ``task_id`` claimed) of the workers' claims so far.

    A claim that took only other tasks' invocations (pynenc's own cron-triggered
    ``recover_pending_invocations`` lands in the window whenever the clock passes a
    multiple of five minutes) is left out: it was not woken by this test's enqueues."""
    counts: Counter[tuple[int, int]] = Counter()
    for line in log.read_text().splitlines() if log.exists() else []:
        pid, taken, claimed = line.split()
        ours = [task for task in claimed.split(",") if task == task_id]
        if int(pid) in workers and (ours or int(taken) == 0):
            counts[int(pid), len(ours)] += 1
    return counts


def test_one_enqueue_wakes_one_of_four_idle_workers(
    app: Pynenc, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    log = tmp_path / "claims.log"
    runner = runners.start(processes=WORKERS, env={CLAIM_LOG_ENV: str(log)})
    workers = set(runner.workers())
    time.sleep(1.0)  # every worker idle, its start-up claims done
    log.unlink(missing_ok=True)

    for i in range(SEQUENTIAL):
        assert tasks.add(i, 1).result == i + 1, runners.diag()
        time.sleep(0.05)  # the workers are idle again before the next

    counts = claims(log, workers, tasks.add.task_id.key)
    taken = sum(n * count for (_, n), count in counts.items())
    empty = sum(count for (_, n), count in counts.items() if n == 0)
    assert taken == SEQUENTIAL, f"{counts}\n{runners.diag()}"
    # Before: every idle worker claimed on every enqueue, 3 * 20 empty claims. A safety
    # poll (django_notify_safety_poll_sec) may add one per worker.
    assert empty <= WORKERS, f"{empty} empty claims for {SEQUENTIAL} tasks: {counts}"


def test_a_burst_keeps_every_worker_busy(
    app: Pynenc, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """One announcement for many messages still reaches every idle worker: each claim
    that leaves work queued wakes the next one (checked from the tasks' own records)."""
    records = tmp_path / "records.log"
    runner = runners.start(processes=WORKERS)
    time.sleep(1.0)
    group = tasks.recorded_sleep.parallelize([(SLEEP_SEC, str(records))] * BURST)
    ids = [invocation.invocation_id for invocation in group.invocations]
    wait_all_success(app, ids, 60, runners.diag)

    starts = sorted(
        (float(at), int(pid))
        for event, pid, at in (line.split() for line in records.read_text().splitlines())
        if event == "start"
    )
    assert len(starts) == BURST
    pids = {pid for _, pid in starts}
    assert pids <= set(runner.workers()), runners.diag()
    assert len(pids) == WORKERS, f"only {len(pids)} of {WORKERS} workers ran the burst"
    # The first four start together (within a second), not one per finished task.
    first = [at for at, _ in starts[:WORKERS]]
    assert first[-1] - first[0] < SLEEP_SEC, f"first starts {first}\n{runners.diag()}"
    assert starts[-1][0] - starts[0][0] < (BURST / WORKERS) * SLEEP_SEC + 2.0


def listening_backends(channel: str) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            [f'LISTEN "{channel}"'],
        )
        return [row[0] for row in cursor.fetchall()]


def test_one_listen_per_runner_and_work_still_runs_when_it_is_cut(
    app: Pynenc, tasks: ModuleType, runners: Runners
) -> None:
    """PostgreSQL: the runner, not each worker, listens for work; with its connection
    killed, workers poll on their backoff, and the runner listens again."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's LISTEN connections")
    from pynenc_django.wakeup import notify_channel

    channel = notify_channel(app.app_id)
    runners.start(processes=WORKERS)
    [listener] = listening_backends(channel)  # one, not one per worker

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [listener])
    started = time.monotonic()
    assert tasks.add(2, 3).result == 5, runners.diag()
    assert time.monotonic() - started < 10, runners.diag()

    deadline = time.monotonic() + 30
    while (again := listening_backends(channel)) in ([], [listener]):
        assert time.monotonic() < deadline, f"never listened again\n{runners.diag()}"
        time.sleep(0.2)
    assert len(again) == 1 and again != [listener], again
    started = time.monotonic()
    assert tasks.add(3, 4).result == 7, runners.diag()
    assert time.monotonic() - started < 2, runners.diag()
