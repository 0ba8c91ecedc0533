"""Schedules on real runners: every cron tick exactly once, events within a second.

The cron tests run the schedules on a faster clock (``PYNENC_DJANGO_TEST_CLOCK``, see
:mod:`pynenc_django.trigger.schedule`): minutes of schedule time in seconds. The runners
themselves (heartbeats, turns, reaping) keep real time, so a real outage counts ``SPEED``
times longer against a tick's 60 s window; the SIGKILL test shortens the runner-loss
bound to match (the arithmetic is by its settings).

Each ``scheduled`` run writes its own record (schedule, invocation id, pid, time); the
ticks come from the trigger runs; the two must agree one to one.
"""

from __future__ import annotations

import json
import signal
import statistics
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pynenc import Pynenc
from pynenc.trigger.trigger_builder import TriggerBuilder
from pynenc_tests.conftest import check_no_atomic_service_overlap

from tests.runner.conftest import (
    RunnerProcess,
    Runners,
    assert_success_exactly_once,
    wait_all_success,
    wait_until,
)

CLOCK_ENV = "PYNENC_DJANGO_TEST_CLOCK"
CONTEXT_MARK = "_context_cron_"


class Clock:
    """The schedule clock the runners use: starts now, ``speed`` times real time."""

    def __init__(self, speed: float) -> None:
        self.epoch = time.time()
        self.speed = speed

    @property
    def env(self) -> dict[str, str]:
        return {CLOCK_ENV: f"{self.epoch!r}:{self.speed!r}"}

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.epoch + (time.time() - self.epoch) * self.speed, UTC)


def schedule(expression: str, index: int, record_path: Path) -> TriggerBuilder:
    return (
        TriggerBuilder()
        .on_cron(expression)
        .with_arguments({"schedule": index, "record_path": str(record_path)})
    )


def fired(app: Pynenc) -> dict[str, list[tuple[datetime, str]]]:
    """Per cron expression: (tick, invocation id) of every trigger run, oldest first."""
    from pynenc_django.models import TriggerRunEntry

    found: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    rows = TriggerRunEntry.objects.for_app(app.app_id).values_list(
        "trigger_run_json", "triggered_invocation_id"
    )
    for run_json, invocation_id in rows:
        for vc_id in json.loads(run_json)["valid_condition_ids"]:
            if CONTEXT_MARK in vc_id:
                condition, tick = vc_id.removeprefix("valid_condition_cron_").split(CONTEXT_MARK)
                found[condition].append((datetime.fromisoformat(tick), invocation_id))
    return {expression: sorted(runs) for expression, runs in found.items()}


def records(path: Path) -> list[tuple[int, str, int, float]]:
    """What the runs themselves wrote: (schedule, invocation id, pid, unix time)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        index, invocation_id, pid, at = line.split()
        rows.append((int(index), invocation_id, int(pid), float(at)))
    return rows


def minutes(first: datetime, last: datetime, step: int = 1) -> list[datetime]:
    out = []
    tick = first
    while tick <= last:
        out.append(tick)
        tick += timedelta(minutes=step)
    return out


def assert_each_run_once(
    app: Pynenc, runs: dict[str, list[tuple[datetime, str]]], path: Path, diag: Any
) -> None:
    """Every trigger run's invocation ran exactly once, by the task's own record."""
    invocation_ids = [inv for ticks in runs.values() for _, inv in ticks]
    wait_all_success(app, invocation_ids, 120, diag)
    assert_success_exactly_once(app, invocation_ids, diag())
    ran = Counter(invocation_id for _, invocation_id, _, _ in records(path))
    assert all(ran[i] == 1 for i in invocation_ids), f"not run exactly once: {ran}\n{diag()}"
    assert all(n == 1 for n in ran.values()), f"ran more than once: {ran.most_common(3)}"


def assert_no_run_unaccounted_for(
    app: Pynenc, path: Path, periodic: dict[str, list[tuple[datetime, str]]] | None = None
) -> None:
    """Every run on record came from a trigger run or a periodic task's run (checked once
    the runners stopped)."""
    sources = [*fired(app).values(), *(periodic or {}).values()]
    triggered = {inv for ticks in sources for _, inv in ticks}
    unknown = {inv for _, inv, _, _ in records(path)} - triggered
    assert not unknown, f"runs without a trigger run: {unknown}"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_one_runner_with_default_settings_fires_every_minute_tick_exactly_once(
    app: Pynenc, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """Quick-start settings, ``* * * * *``, eight minutes of schedule time. pynenc's own
    slots ran it at 04:45, 46, 47, 50, 51, 52, 55...: three ticks in five."""
    path = tmp_path / "runs.txt"
    app.trigger.register_task_triggers(tasks.scheduled, schedule("* * * * *", 0, path))
    clock = Clock(speed=30.0)
    runner = runners.start(processes=1, env=clock.env)
    first = clock.now().replace(second=0, microsecond=0)  # fired at once: within its window
    last = first + timedelta(minutes=8)

    def diag() -> str:
        return f"clock {clock.now().isoformat()}; fired {fired(app)}\n{runners.diag()}"

    def every_tick_fired() -> bool:
        ticks = [tick for tick, _ in fired(app).get("* * * * *", [])]
        return bool(ticks) and ticks[-1] >= last

    wait_until(every_tick_fired, 8 * 60 / clock.speed + 60, diag)
    runs = fired(app)["* * * * *"]
    assert_each_run_once(app, {"* * * * *": runs}, path, diag)
    runner.send(signal.SIGTERM)
    assert runner.wait_exit(60) == 0, runner.tail()

    runs = fired(app)["* * * * *"]
    ticks = [tick for tick, _ in runs]
    assert ticks == minutes(ticks[0], ticks[-1]), f"ticks missed or doubled\n{diag()}"
    assert ticks[0] <= first and ticks[-1] >= last, diag()
    assert_no_run_unaccounted_for(app, path)


def _expressions() -> list[tuple[str, int]]:
    """Sixty distinct cron expressions (distinct conditions), every minute or every two."""
    found: list[tuple[str, int]] = []
    for minute, step in (("*", 1), ("*/1", 1), ("0-59", 1), ("*/2", 2), ("0-58/2", 2)):
        for hour in ("*", "0-23", "*/1"):
            for dom in ("*", "1-31"):
                for month in ("*", "1-12"):
                    found.append((f"{minute} {hour} {dom} {month} *", step))
    return found[:CRON_SCHEDULES]


CRON_SCHEDULES = 50
#: django-celery-beat interval schedules of the eight-runner test (10 s of schedule time).
INTERVAL_SCHEDULES = 10
INTERVAL_SEC = 10


def interval_schedules(path: Path, clock: Clock) -> list[Any]:
    """Intervals counted from their ``last_run_at``, set to the schedule clock's now,
    where django-celery-beat would count from ``date_changed``, a real time.

    Created while eight runners write: on SQLite, django-celery-beat's ``post_save``
    (a read, then a write, in a deferred transaction) can be refused at once with
    "database is locked" (the test settings keep SQLite's default transaction mode, so
    our backends prove they need no IMMEDIATE); the whole creation is tried again."""
    from django.db import OperationalError, transaction
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    def create() -> list[Any]:
        since = clock.now()
        every = IntervalSchedule.objects.create(every=INTERVAL_SEC, period=IntervalSchedule.SECONDS)
        return [
            PeriodicTask.objects.create(
                name=f"every {INTERVAL_SEC}s #{i}",
                task="tests.project.jobs.tasks.scheduled",
                interval=every,
                kwargs=json.dumps({"schedule": 100 + i, "record_path": str(path)}),
                last_run_at=since,
            )
            for i in range(INTERVAL_SCHEDULES)
        ]

    for attempt in range(30):
        try:
            with transaction.atomic():
                return create()
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == 29:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def beat_runs(periodic_tasks: list[Any]) -> dict[str, list[tuple[datetime, str]]]:
    """Per periodic task: (due time, invocation id) of every run on record."""
    from pynenc_django.beat.models import PeriodicTaskRun

    found: dict[str, list[tuple[datetime, str]]] = {}
    for periodic_task in periodic_tasks:
        rows = PeriodicTaskRun.objects.filter(periodic_task=periodic_task).order_by("due_at")
        found[periodic_task.name] = [
            (row.due_at, row.invocation_id or f"<{row.reason}: {row.error}>") for row in rows
        ]
    return found


SPEED = 6.0
#: The runner-loss bound, shortened so that SPEED times it stays well within a due time's
#: 60 s window: a dead holder's heartbeat is at most 1 s old when it dies and is reaped 3 s
#: later at the next runner's look (each looks every second): 5 s, 30 s of schedule time.
ENV = {
    "PYNENC__DJANGO_HEARTBEAT_INTERVAL_SEC": "1",
    "PYNENC__DJANGO_RUNNER_DEAD_AFTER_SEC": "3",
    # Each turn holds the atomic service for a while, so the test can kill its holder.
    "PYNENC_DJANGO_TEST_SLOW_ATOMIC_SEC": "0.5",
}


@pytest.mark.slow
@pytest.mark.exclusive
@pytest.mark.timeout(420)
def test_eight_runners_sixty_schedules_no_tick_missed_or_doubled_across_a_sigkill(
    app: Pynenc, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """Fifty cron schedules (every minute, or every two) and ten django-celery-beat
    intervals (every 10 s of schedule time), on eight runners, across a SIGKILL of the
    runner that is evaluating them: every due time exactly once, none late."""
    from pynenc_django.models import AtomicServiceExecution, AtomicServiceGate

    path = tmp_path / "runs.txt"
    expressions = _expressions()
    app.trigger.register_task_triggers(
        tasks.scheduled,
        [schedule(expr, i, path) for i, (expr, _) in enumerate(expressions)],
    )
    clock = Clock(speed=SPEED)
    started = [
        runners.start(processes=1, env={**ENV, **clock.env}, wait=False, name=f"runner-{i + 1}")
        for i in range(8)
    ]
    for runner in started:
        runner.wait_ready(1, timeout=180)
    by_id: dict[str, RunnerProcess] = {runner.runner_id: runner for runner in started}
    periodic_tasks: list[Any] = []

    def diag() -> str:
        executions = AtomicServiceExecution.objects.for_app(app.app_id).order_by("-start_time")[:20]
        turns = "\n".join(
            f"  {row.start_time.isoformat()} {row.status} {row.runner_id[:8]} {row.reason}"
            for row in executions
        )
        runs = {e: [t.strftime("%H:%M") for t, _ in ticks] for e, ticks in fired(app).items()}
        intervals = {
            name: [f"{t:%H:%M:%S} {inv[:8]}" for t, inv in due]
            for name, due in beat_runs(periodic_tasks).items()
        }
        return (
            f"clock {clock.now().isoformat()}\nruns {runs}\nintervals {intervals}\n"
            f"turns\n{turns}\n{runners.diag()}"
        )

    def all_fired_up_to(tick: datetime) -> bool:
        runs = fired(app)
        intervals = beat_runs(periodic_tasks)
        return all(
            expression in runs and runs[expression][-1][0] >= tick - timedelta(minutes=step - 1)
            for expression, step in expressions
        ) and all(
            due and due[-1][0] >= tick - timedelta(seconds=INTERVAL_SEC)
            for due in intervals.values()
        )

    start = clock.now().replace(second=0, microsecond=0)
    periodic_tasks[:] = interval_schedules(path, clock)
    intervals_since = periodic_tasks[0].last_run_at
    wait_until(lambda: all_fired_up_to(start + timedelta(minutes=2)), 120, diag)

    # ---- SIGKILL whichever runner is inside its turn at the atomic services, early in
    # it: a turn seen late could finish before the signal lands (then nothing to reap).
    def holder() -> RunnerProcess | None:
        gate = AtomicServiceGate.objects.filter(app_id=app.app_id).first()
        if gate is None or gate.running_run_id is None or gate.started_at is None:
            return None
        if datetime.now(UTC) - gate.started_at > timedelta(seconds=0.2):  # of its 0.5 s
            return None
        return by_id.get(gate.runner_id or "")

    victim = wait_until(holder, 60, diag)
    victim.send(signal.SIGKILL)
    victim.wait_exit(10)
    killed_at = clock.now()

    # ---- its turn is reaped, and every schedule goes on without a gap
    end = killed_at.replace(second=0, microsecond=0) + timedelta(minutes=2)
    wait_until(lambda: all_fired_up_to(end), 2 * 60 / SPEED + 90, diag)
    ours = {e: runs for e, runs in fired(app).items() if e in dict(expressions)}
    assert_each_run_once(app, {**ours, **beat_runs(periodic_tasks)}, path, diag)
    for runner in started:
        if runner is not victim:
            runner.send(signal.SIGTERM)
    for runner in started:
        if runner is not victim:
            assert runner.wait_exit(60) == 0, runner.tail()

    runs = fired(app)
    for expression, step in expressions:
        ticks = [tick for tick, _ in runs[expression]]
        assert len(ticks) == len(set(ticks)), f"{expression}: a tick fired twice\n{diag()}"
        expected = minutes(ticks[0], ticks[-1], step)
        assert ticks == expected, f"{expression}: ticks missed\n{diag()}"
        # First seen more than 60 s after a tick, a schedule starts with its next one.
        slack = timedelta(minutes=step - 1)
        assert ticks[0] <= start + slack and ticks[-1] >= end - slack, diag()
    from pynenc_django.beat.models import PeriodicTaskRun

    for name, due in beat_runs(periodic_tasks).items():
        times = [at for at, _ in due]
        step = timedelta(seconds=INTERVAL_SEC)
        assert times == [times[0] + k * step for k in range(len(times))], f"{name}\n{diag()}"
        assert times[0] == intervals_since + step and times[-1] >= end - step, f"{name}\n{diag()}"
    runs_on_record = PeriodicTaskRun.objects.filter(periodic_task__in=periodic_tasks)
    assert set(runs_on_record.values_list("reason", flat=True)) == {"schedule"}, diag()
    assert not runs_on_record.filter(missed__gt=0).exists(), diag()
    reaped = AtomicServiceExecution.objects.for_app(app.app_id).filter(
        runner_id=victim.runner_id, status="abandoned"
    )
    assert reaped.exists(), f"the killed holder's turn was never reaped\n{diag()}"
    check_no_atomic_service_overlap(app)
    assert_no_run_unaccounted_for(app, path, beat_runs(periodic_tasks))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_event_triggered_tasks_start_within_a_second(
    app: Pynenc, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """Twenty events, one at a time: the triggered task's own start time minus the
    ``emit_event`` time. pynenc's slots took 134 s."""
    from django.db import connection

    path = tmp_path / "runs.txt"
    app.trigger.register_task_triggers(
        tasks.scheduled,
        TriggerBuilder()
        .on_event("order.paid")
        .with_arguments({"schedule": 1, "record_path": str(path)}),
    )
    runners.start(processes=1)
    delays = []
    for n in range(20):
        emitted = time.time()
        app.trigger.emit_event("order.paid", {"n": n})
        wait_until(lambda n=n: len(records(path)) > n, 30, runners.diag)  # type: ignore[misc]
        delays.append(records(path)[n][3] - emitted)
    p50 = statistics.median(delays)
    print(f"event -> task start, {connection.vendor}: p50 {p50:.3f}s max {max(delays):.3f}s")
    bound = 1.0 if connection.vendor == "postgresql" else 5.0
    assert p50 < bound, f"p50 {p50:.3f}s: {sorted(delays)}"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_turn_longer_than_the_runner_loss_bound_is_not_reaped_while_it_runs(
    app: Pynenc, runners: Runners
) -> None:
    """Each turn takes 4 s; a runner is lost after 3 s without a heartbeat. The runner
    busy with its turn keeps its heartbeat fresh meanwhile, so the other never reaps it
    (ABANDONED while it runs) and never starts an overlapping turn."""
    from pynenc_django.models import AtomicServiceExecution

    env = {
        "PYNENC__DJANGO_HEARTBEAT_INTERVAL_SEC": "1",
        "PYNENC__DJANGO_RUNNER_DEAD_AFTER_SEC": "3",
        "PYNENC_DJANGO_TEST_SLOW_ATOMIC_SEC": "4",
    }
    started = [runners.start(processes=1, env=env, wait=False) for _ in range(2)]
    for runner in started:
        runner.wait_ready(1)
    executions = AtomicServiceExecution.objects.for_app(app.app_id)
    wait_until(lambda: executions.filter(status="completed").count() >= 3, 120, runners.diag)
    for runner in started:
        runner.send(signal.SIGTERM)
    for runner in started:
        assert runner.wait_exit(60) == 0, runner.tail()
    summary = [
        (row.runner_id[:8], row.status, row.reason) for row in executions.order_by("start_time")
    ]
    assert not executions.filter(status="abandoned").exists(), summary
    assert executions.filter(status="blocked").exists(), summary  # the other one was due
    check_no_atomic_service_overlap(app)
