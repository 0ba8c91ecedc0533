"""A whole runner host lost mid-task: a live runner puts its work back within the bound.

``django_runner_dead_after_sec`` (30 s) without a heartbeat makes a worker dead; every live
runner looks every ``django_heartbeat_interval_sec`` (5 s). A runner whose parent alone
died is *not* lost: its orphaned workers beat on their own while they finish.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import ModuleType

import pytest
from pynenc import Pynenc

from tests.runner.conftest import (
    KILLED,
    REROUTED,
    RUNNING,
    HistoryEntry,
    Runners,
    assert_success_exactly_once,
    attempt_records,
    create_times,
    describe,
    history,
    history_statuses,
    kill_process_group,
    marked_processes,
    now,
    process_gone,
    runner_of,
    running_owned_by,
    wait_all_success,
    wait_until,
)

RESTART_LIMIT_SEC = 60.0  # with default settings: 30 s bound + one 5 s look, and margin
# Tuned: workers beat every second, dead after 6 s: recovery within about 7 s.
TUNED = {"PYNENC__DJANGO_HEARTBEAT_INTERVAL_SEC": "1", "PYNENC__DJANGO_RUNNER_DEAD_AFTER_SEC": "6"}
TUNED_RESTART_LIMIT_SEC = 30.0


def _restart_after(
    app: Pynenc, invocation_id: str, since: object, dead_worker: str
) -> HistoryEntry | None:
    """The invocation's first RUNNING after ``since`` by another worker than the dead one."""
    return next(
        (
            entry
            for entry in history(app, invocation_id)
            if entry.status == RUNNING
            and entry.timestamp > since  # type: ignore[operator]
            and entry.runner_id not in (None, dead_worker)
        ),
        None,
    )


def _running_on_distinct_workers(app: Pynenc, ids: list[str], runners: Runners) -> dict[str, str]:
    return wait_until(
        lambda: (owned := running_owned_by(app, ids)) and len(owned) == len(ids) and owned,
        60,
        lambda: f"the invocations never ran together:\n{describe(app, ids)}\n{runners.diag()}",
    )


@pytest.mark.parametrize(
    ("values", "valid"),
    [
        ({}, True),  # 30 s over 5 s beats
        ({"django_runner_dead_after_sec": 15}, True),
        ({"django_runner_dead_after_sec": 0}, True),  # off
        ({"django_runner_dead_after_sec": 10}, False),
        ({"django_heartbeat_interval_sec": 1, "django_runner_dead_after_sec": 6}, True),
        ({"django_heartbeat_interval_sec": 20}, False),
        ({"django_runner_dead_after_sec": -1}, False),
    ],
)
def test_the_bound_spans_at_least_three_heartbeats(values: dict[str, float], valid: bool) -> None:
    """``manage.py check`` (E007) and the runner refuse a bound an orphaned worker's first
    own heartbeat could miss."""
    import pynenc_django.conf  # noqa: F401  (its config classes are what the check tries)
    from pynenc_django.checks import _check_values

    errors = _check_values(values)
    assert (not errors) == valid, errors
    if not valid:
        assert errors[0].id == "pynenc_django.E007"
        assert "heartbeat" in errors[0].msg


def test_which_invocations_count_as_lost(app: Pynenc, tasks: ModuleType) -> None:
    """The recovery query alone, on rows set up by hand: only our runners' workers with a
    stale or missing heartbeat, and reroutes left KILLED, are lost."""
    from datetime import timedelta

    from pynenc_django.models import Invocation, RunnerContextRecord, RunnerHeartbeat
    from pynenc_django.ops.recovery import lost_invocations

    app_id, alias, dead_after = app.app_id, "default", 30.0
    fresh, stale = now(), now() - timedelta(seconds=dead_after + 5)

    def context(runner_id: str, cls: str, parent: str | None) -> None:
        RunnerContextRecord.objects.create(
            app_id=app_id,
            runner_id=runner_id,
            runner_cls=cls,
            parent_runner_id=parent,
            pid=1,
            hostname="elsewhere",
            thread_id=1,
        )

    def beat(runner_id: str, at: object) -> None:
        RunnerHeartbeat.objects.create(
            app_id=app_id, runner_id=runner_id, created_at=at, last_heartbeat=at
        )

    context("ours", "DjangoPersistentProcessRunner", None)
    context("theirs", "ThreadRunner", None)
    for worker, parent in [
        ("w-fresh", "ours"),
        ("w-stale", "ours"),
        ("w-gone", "ours"),
        ("w-excluded", "ours"),
        ("w-theirs", "theirs"),
    ]:
        context(worker, "PPRWorker", parent)
    beat("w-fresh", fresh)
    beat("w-stale", stale)
    beat("w-excluded", stale)
    beat("w-theirs", stale)  # "w-gone" has no heartbeat at all (purged)

    cases = {  # name: (status, owner, status time, lost?)
        "running-fresh": ("running", "w-fresh", stale, False),
        "running-stale": ("running", "w-stale", stale, True),
        "pending-stale": ("pending", "w-stale", stale, True),
        "paused-gone": ("paused", "w-gone", stale, True),
        "running-excluded": ("running", "w-excluded", stale, False),
        "running-theirs": ("running", "w-theirs", stale, False),
        "success-stale": ("success", None, stale, False),
        "killed-old": ("killed", None, stale, True),
        "killed-new": ("killed", None, fresh, False),
        "rerouted-old": ("rerouted", None, stale, False),
    }
    ids = {}
    for name, (status, owner, at, _) in cases.items():
        invocation_id = tasks.add(1, len(ids)).invocation_id
        ids[invocation_id] = name
        Invocation.objects.for_app(app_id).filter(invocation_id=invocation_id).update(
            status=status, status_runner_id=owner, status_timestamp=at
        )

    found = lost_invocations(
        app_id, alias, dead_after, ["DjangoPersistentProcessRunner"], ["w-excluded"]
    )
    got = {ids[f.invocation_id]: f for f in found if f.invocation_id in ids}
    assert set(got) == {name for name, case in cases.items() if case[3]}, sorted(got)
    assert got["paused-gone"].last_heartbeat is None
    assert got["running-stale"].last_heartbeat is not None
    assert got["killed-old"].owner is None


@pytest.mark.slow
def test_lost_runner_host_task_restarts_within_60s_exactly_once_with_default_settings(
    app: Pynenc, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    doomed = runners.start(processes=1, name="doomed-runner")
    finished = tasks.add(20, 22)  # finished by the doomed runner: must never run again
    wait_all_success(app, [finished.invocation_id], 60, runners.diag)
    live = runners.start(processes=1, name="live-runner")

    paths = [tmp_path / "attempts-a.log", tmp_path / "attempts-b.log"]
    invocations = [tasks.recorded_sleep(12.0, str(path)) for path in paths]
    ids = [inv.invocation_id for inv in invocations]
    owners = _running_on_distinct_workers(app, ids, runners)
    # One worker each: the doomed runner runs one of the two (the victim).
    by_runner = {runner_of(runners, worker).name: inv for inv, worker in owners.items()}
    assert set(by_runner) == {doomed.name, live.name}, runners.diag()
    victim_id, bystander_id = by_runner[doomed.name], by_runner[live.name]
    victim_path, bystander_path = (paths[ids.index(i)] for i in (victim_id, bystander_id))
    dead_worker = owners[victim_id]
    dead_pid = doomed.worker_pid(dead_worker)
    wait_until(lambda: attempt_records(victim_path), 10, "the victim never started")

    killed_at = now()
    killed_monotonic = time.monotonic()
    kill_process_group(doomed)
    wait_until(
        lambda: not marked_processes(doomed.pid, [dead_pid]),
        10,
        lambda: f"the doomed runner's processes survived SIGKILL\n{runners.diag()}",
        interval=0.1,
    )
    runners.start(processes=1, name="second-runner", wait=False)  # at once, defaults

    restarted = wait_until(
        lambda: _restart_after(app, victim_id, killed_at, dead_worker),
        RESTART_LIMIT_SEC + 5,
        lambda: (
            f"the lost host's invocation never ran again:\n{describe(app, ids)}\n{runners.diag()}"
        ),
        interval=0.2,
    )
    delay = (restarted.timestamp - killed_at).total_seconds()
    print(
        f"lost host's invocation running again {delay:.1f}s after the kill "
        f"(found {time.monotonic() - killed_monotonic:.1f}s after it)"
    )
    assert delay < RESTART_LIMIT_SEC, f"restarted only after {delay:.1f}s\n{runners.diag()}"

    wait_all_success(app, ids, 60, runners.diag)
    assert_success_exactly_once(app, [*ids, finished.invocation_id], runners.diag())
    assert [inv.result for inv in invocations] == [str(path) for path in paths]

    # The task's own records: the victim started twice and finished once, in the
    # second attempt; the bystander (a live runner's) once, undisturbed.
    victim_records = attempt_records(victim_path)
    assert [r.event for r in victim_records] == ["start", "start", "finish"], victim_records
    assert victim_records[0].pid == dead_pid, (victim_records, dead_pid)
    assert victim_records[1].pid == victim_records[2].pid != dead_pid, victim_records
    bystander_records = attempt_records(bystander_path)
    assert [r.event for r in bystander_records] == ["start", "finish"], bystander_records

    after_kill = [e.status for e in history(app, victim_id) if e.timestamp >= killed_at]
    assert after_kill[:2] == [KILLED, REROUTED], (after_kill, runners.diag())
    for kept in (bystander_id, finished.invocation_id):
        trail = history_statuses(app, kept)
        assert KILLED not in trail and trail.count(RUNNING) == 1, (trail, runners.diag())
    recovered_by = [
        p.name for p in runners.started if f"Recovering invocation:{victim_id}" in p.log()
    ]
    assert recovered_by, f"no runner logged the recovery\n{runners.diag()}"


@pytest.mark.slow
def test_orphaned_worker_keeps_its_invocation_while_a_lost_hosts_is_recovered(
    app: Pynenc, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """Tuned bound (6 s). Two runners die: one's parent alone (its worker, orphaned, keeps
    running its task and its own heartbeat), the other's whole process group. A third,
    live runner recovers the second's invocation within seconds and never the first's."""
    orphaning = runners.start(processes=1, env=TUNED, name="parent-killed")
    kept_path = tmp_path / "attempts-kept.log"
    kept = tasks.recorded_sleep(25.0, str(kept_path))
    kept_owner = _running_on_distinct_workers(app, [kept.invocation_id], runners)
    orphan_worker = kept_owner[kept.invocation_id]
    orphan_pid = orphaning.worker_pid(orphan_worker)
    orphan_created = create_times([orphan_pid])[orphan_pid]

    lost_runner = runners.start(processes=1, env=TUNED, name="group-killed")
    lost_path = tmp_path / "attempts-lost.log"
    lost = tasks.recorded_sleep(12.0, str(lost_path))
    lost_owner = _running_on_distinct_workers(app, [lost.invocation_id], runners)
    lost_worker = lost_owner[lost.invocation_id]
    assert runner_of(runners, lost_worker) is lost_runner, runners.diag()

    observer = runners.start(processes=1, env=TUNED, name="observer")
    wait_until(lambda: attempt_records(lost_path), 10, "the lost host's task never started")
    killed_at = now()
    orphaning.send(signal.SIGKILL)
    kill_process_group(lost_runner)
    orphaning.wait_exit(10)

    restarted = wait_until(
        lambda: _restart_after(app, lost.invocation_id, killed_at, lost_worker),
        TUNED_RESTART_LIMIT_SEC,
        lambda: (
            f"the lost host's invocation never ran again:\n"
            f"{describe(app, [lost.invocation_id, kept.invocation_id])}\n{runners.diag()}"
        ),
        interval=0.2,
    )
    delay = (restarted.timestamp - killed_at).total_seconds()
    print(f"tuned bound (6 s): lost host's invocation running again {delay:.1f}s after the kill")

    ids = [kept.invocation_id, lost.invocation_id]
    wait_all_success(app, ids, 60, runners.diag)
    assert_success_exactly_once(app, ids, runners.diag())

    kept_records = attempt_records(kept_path)
    assert [(r.event, r.pid) for r in kept_records] == [
        ("start", orphan_pid),
        ("finish", orphan_pid),
    ], (kept_records, runners.diag())
    # The observer was recovering lost work while the orphan was still running its task:
    # had the orphan's heartbeat gone stale, its invocation would have been taken too.
    assert kept_records[1].at > restarted.timestamp, (kept_records, restarted)
    trail = history_statuses(app, kept.invocation_id)
    assert KILLED not in trail and trail.count(RUNNING) == 1, (trail, runners.diag())
    for process in runners.started:
        assert f"Recovering invocation:{kept.invocation_id}" not in process.log(), runners.diag()

    lost_records = attempt_records(lost_path)
    assert [r.event for r in lost_records] == ["start", "start", "finish"], lost_records
    assert f"Recovering invocation:{lost.invocation_id}" in observer.log(), observer.tail()
    # Its task done, the orphan exits.
    wait_until(
        lambda: process_gone(orphan_pid, orphan_created),
        10,
        lambda: f"the orphaned worker did not exit after its task\n{runners.diag()}",
        interval=0.1,
    )
