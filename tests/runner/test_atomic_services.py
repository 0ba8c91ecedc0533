"""Four runners share pynenc's slotted atomic services for 50 s under load; one dies
holding them.

This is pynenc's own scheduling (``django_atomic_service_every_sec = 0``), kept for
clusters that choose it; the default turns are tested in ``test_schedules.py``. Short
atomic-service settings come from ``PYNENC__*`` environment variables. Every atomic
service run sleeps first (``PYNENC_DJANGO_TEST_SLOW_ATOMIC_SEC``, a hook of the test
project's ``jobs`` app), so the test can SIGKILL a runner while it holds the slot.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from types import ModuleType
from typing import Any

import pytest
from pynenc import Pynenc
from pynenc_tests.conftest import check_no_atomic_service_overlap

from tests.runner.conftest import (
    RunnerProcess,
    Runners,
    assert_success_exactly_once,
    wait_all_success,
    wait_until,
)

RUNNERS = 4
DURATION_SEC = 50.0  # of the whole exercise, counted from the moment all runners are up
KILL_AFTER_SEC = 15.0
SLOW_ATOMIC_SEC = 2.0
DEAD_AFTER_MIN = 0.25  # 15 s: well above the 5 s heartbeat period and the 2 s slow run
ENV = {
    "PYNENC__DJANGO_ATOMIC_SERVICE_EVERY_SEC": "0",
    # An 18 s cycle: 4.5 s slots for four runners (3.3 s after the margin), 6 s for three.
    "PYNENC__ATOMIC_SERVICE_INTERVAL_MINUTES": "0.3",
    "PYNENC__ATOMIC_SERVICE_SPREAD_MARGIN_MINUTES": "0.02",
    "PYNENC__ATOMIC_SERVICE_CHECK_INTERVAL_MINUTES": "0.01",
    "PYNENC__RUNNER_CONSIDERED_DEAD_AFTER_MINUTES": str(DEAD_AFTER_MIN),
    "PYNENC_DJANGO_TEST_SLOW_ATOMIC_SEC": str(SLOW_ATOMIC_SEC),
}


class Load:
    """A few short tasks every second or so, with arguments unique to the test."""

    def __init__(self, tasks: ModuleType, tag: str) -> None:
        self.tasks = tasks
        self.tag = tag
        self.invocations: list[Any] = []
        self.last = 0.0

    def tick(self) -> None:
        if time.monotonic() - self.last < 1.0:
            return
        self.last = time.monotonic()
        n = len(self.invocations)
        self.invocations.append(self.tasks.sleep_task(0.2, f"{self.tag}-{n}"))
        self.invocations.append(self.tasks.add(n, 1_000_000))

    @property
    def ids(self) -> list[str]:
        return [inv.invocation_id for inv in self.invocations]


def _executions(app: Pynenc) -> Any:
    from pynenc_django.models import AtomicServiceExecution

    return AtomicServiceExecution.objects.for_app(app.app_id)


def _summary(app: Pynenc, names: dict[str, str]) -> str:
    rows = _executions(app).order_by("start_time", "id")
    lines = [
        f"  {row.start_time.isoformat()} -> {row.end_time.isoformat() if row.end_time else '…'} "
        f"{names.get(row.runner_id, row.runner_id[:8])} {row.status} {row.reason}"
        for row in rows
    ]
    return "atomic-service executions:\n" + "\n".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_four_runners_share_atomic_services_and_survive_a_holder_being_killed(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str
) -> None:
    started = [
        runners.start(processes=1, env=ENV, wait=False, name=f"runner-{i + 1}")
        for i in range(RUNNERS)
    ]
    for runner in started:
        runner.wait_ready(1)
    by_id: dict[str, RunnerProcess] = {runner.runner_id: runner for runner in started}
    names = {rid: runner.name for rid, runner in by_id.items()}
    t0 = time.monotonic()
    load = Load(tasks, tag)

    def diag() -> str:
        return f"{_summary(app, names)}\n{runners.diag()}"

    def loaded(predicate: Any) -> Any:
        def check() -> Any:
            load.tick()
            return predicate()

        return check

    # ---- phase 1: normal operation, then kill whoever is inside its atomic service
    wait_until(loaded(lambda: time.monotonic() - t0 > KILL_AFTER_SEC), 60, diag)

    def fresh_holder() -> Any:
        row = _executions(app).filter(status="running").order_by("-start_time").first()
        if row is None or row.runner_id not in by_id:
            return None
        age = (time.time() - row.start_time.timestamp()) if row.start_time else 99
        return row if age < SLOW_ATOMIC_SEC / 2 else None

    holder = wait_until(loaded(fresh_holder), 120, lambda: f"no runner held the slot\n{diag()}")
    victim = by_id[holder.runner_id]
    victim.send(signal.SIGKILL)
    victim.wait_exit(10)
    row = _executions(app).get(run_id=holder.run_id)
    assert row.status == "running", (
        f"{victim.name} was not killed inside its atomic service: {row.status}\n{diag()}"
    )
    survivors = [runner for runner in started if runner is not victim]

    # ---- phase 2: its run is reaped as ABANDONED once its heartbeat is dead
    def abandoned() -> Any:
        return _executions(app).filter(run_id=holder.run_id, status="abandoned").first()

    reaped = wait_until(
        loaded(abandoned),
        DEAD_AFTER_MIN * 60 + 75,
        lambda: f"the killed holder's run was never ABANDONED\n{diag()}",
    )
    assert reaped.reason.strip(), f"ABANDONED without a reason\n{diag()}"
    assert reaped.end_time is not None
    assert victim.runner_id in reaped.reason, reaped.reason

    # ---- phase 3: the others keep running atomic services (no jam) until the end
    def completed_after_reap() -> Any:
        return Counter(
            _executions(app)
            .filter(status="completed", start_time__gte=reaped.end_time)
            .values_list("runner_id", flat=True)
        )

    wait_until(
        loaded(lambda: len(completed_after_reap()) >= 2),
        120,
        lambda: f"atomic services jammed after the reap: {completed_after_reap()}\n{diag()}",
    )
    wait_until(loaded(lambda: time.monotonic() - t0 > DURATION_SEC), DURATION_SEC + 60, diag)

    # ---- every submitted task ran exactly once (the killed runner's worker finished its own)
    wait_all_success(app, load.ids, 90, diag)
    assert_success_exactly_once(app, load.ids, diag())
    for runner in survivors:
        assert not runner.exited(), runner.tail()
        runner.send(signal.SIGTERM)
    for runner in survivors:
        assert runner.wait_exit(60) == 0, runner.tail()

    # ---- the gate held: no overlapping windows; every BLOCKED row says why
    executions = _executions(app)
    counts = Counter(executions.values_list("status", flat=True))
    print(f"atomic-service executions by status: {dict(counts)}; tasks: {len(load.ids)}")
    blocked = list(executions.filter(status="blocked"))
    assert all(row.reason.strip() for row in blocked), diag()
    assert any(f"prior_running:{holder.run_id}" in row.reason for row in blocked), (
        f"no runner was ever blocked by the dead holder's run\n{diag()}"
    )
    assert counts["completed"] >= RUNNERS, diag()
    assert len(set(executions.filter(status="completed").values_list("runner_id", flat=True))) >= 3
    assert not executions.filter(status="running").exists(), diag()
    check_no_atomic_service_overlap(app)
