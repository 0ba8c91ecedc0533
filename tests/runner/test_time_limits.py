"""Per-task time limits on a real ``manage.py pynenc_runner``: the hard ``time_limit``
(the runner kills the worker, the invocation ends FAILED and never runs again, a new
worker takes over) and the soft ``soft_time_limit`` (``SoftTimeLimitExceeded`` inside
the task, which catches it), set in ``tests/settings.py``'s ``PYNENC["task"]`` by key
and by pattern; and bad limits, refused with their key named.

What ran, where and when comes from the tasks' own records
(``tests/project/jobs/limits.py``): ``<event> <pid> <unix time>`` lines."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from django.core import checks
from django.test import override_settings
from pynenc import Pynenc

from pynenc_django import get_result
from pynenc_django.conf import PynencSettingsError, task_settings
from pynenc_django.exceptions import TimeLimitExceededError
from tests.runner.conftest import (
    PENDING,
    RUNNING,
    Runners,
    create_times,
    describe,
    history,
    history_statuses,
    process_gone,
)
from tests.settings import PYNENC

FAILED = "failed"
HARD_LIMIT_SEC = 1.0  # tests/settings.py: ...limits.over_hard_limit
SOFT_LIMIT_SEC = 0.5  # tests/settings.py: ...limits.soft_*


def test_past_its_hard_limit_the_worker_is_killed_and_it_never_runs_again(
    app: Pynenc, limits: ModuleType, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    runner = runners.start(processes=1)
    ((old_pid, worker_id),) = runner.workers().items()
    created = create_times([old_pid])[old_pid]
    record = str(tmp_path / "records.txt")
    invocation = limits.over_hard_limit(30, record)

    with pytest.raises(TimeLimitExceededError, match="ran past its time_limit of 1s") as raised:
        get_result(invocation, timeout=30)
    assert raised.value.time_limit == HARD_LIMIT_SEC
    assert raised.value.task_id_key == "tests.project.jobs.limits.over_hard_limit"

    ((event, pid, started),) = calling.records(record)  # started once, never finished
    assert (event, pid) == ("start", old_pid)
    failed_at = history(app, invocation.invocation_id)[-1].timestamp.timestamp()
    assert failed_at - started >= HARD_LIMIT_SEC, "killed before its limit"
    assert process_gone(old_pid, created), f"worker pid {old_pid} still runs"
    trail = history_statuses(app, invocation.invocation_id)
    assert trail[trail.index(RUNNING) :] == [RUNNING, FAILED], describe(
        app, [invocation.invocation_id]
    )
    assert runner.wait_for_log(f"Killing worker:{worker_id} pid:{old_pid}")

    # The new worker runs the next task; the failed one is not run again.
    marker = str(tmp_path / "marker.txt")
    assert get_result(calling.stamp.delay("next", marker), timeout=60) == "next"
    ((_, new_pid, _),) = calling.records(marker)
    assert new_pid != old_pid and new_pid in runner.workers(), runner.workers()
    assert len(calling.records(record)) == 1


def test_the_soft_limit_is_raised_in_the_task_which_cleans_up_and_finishes(
    app: Pynenc, limits: ModuleType, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    runner = runners.start(processes=1)
    record = str(tmp_path / "records.txt")
    invocation = limits.soft_cleanup(8, record)

    assert get_result(invocation, timeout=30) == "cleaned up"
    (start, soft) = calling.records(record)
    assert (start[0], soft[0]) == ("start", f"soft-{SOFT_LIMIT_SEC:g}")
    assert start[1] == soft[1] and start[1] in runner.workers(), "one worker, not killed"
    # The limit counts from the run's start on the worker: after its claim (PENDING), a
    # few milliseconds before pynenc records RUNNING inside the run (on a loaded machine
    # those can be more than the time from the alarm to the task's record of it).
    claimed = next(e for e in history(app, invocation.invocation_id) if e.status == PENDING)
    assert soft[2] - claimed.timestamp.timestamp() >= SOFT_LIMIT_SEC, "raised before its limit"
    assert soft[2] - start[2] < 8, "raised before the task's end"
    assert history_statuses(app, invocation.invocation_id)[-1] == "success"


def test_a_soft_limit_waits_for_a_run_nested_in_the_tasks_wait(
    app: Pynenc, limits: ModuleType, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """One worker: the child runs inside the parent's wait, past the parent's soft limit.
    The child is not interrupted; the parent gets the exception once it is back."""
    runners.start(processes=1)
    record = str(tmp_path / "records.txt")
    parent = limits.soft_waiting_parent(1.5, record)

    assert get_result(parent, timeout=30) == "cleaned up"
    events = [event for event, _, _ in calling.records(record)]
    assert events == ["parent-start", "start", "finish", "parent-soft"], events
    (parent_start, child_start, child_end, soft) = calling.records(record)
    assert parent_start[1] == child_start[1], "the child ran nested, in the parent's worker"
    assert child_end[2] - parent_start[2] > SOFT_LIMIT_SEC, "the child outlived the limit"


def test_negative_limits_are_refused_with_their_key_named() -> None:
    key = "tests.project.jobs.limits.over_hard_limit"
    bad = {**PYNENC, "task": {key: {"time_limit": -1}, "orders.*": {"soft_time_limit": -2}}}
    with override_settings(PYNENC=bad):
        found = [m.msg for m in checks.run_checks() if m.id == "pynenc_django.E008"]
    assert f"settings.PYNENC['task']['{key}']['time_limit'] is -1: must be at least 0." in found
    assert "settings.PYNENC['task']['orders.*']['soft_time_limit'] is -2" in " ".join(found)
    with pytest.raises(PynencSettingsError, match=rf"\['{key}'\]\['time_limit'\] is -1"):
        task_settings(bad, key)
    assert task_settings(PYNENC, key).time_limit == HARD_LIMIT_SEC
    assert task_settings(PYNENC, "tests.project.jobs.limits.soft_cleanup").soft_time_limit == (
        SOFT_LIMIT_SEC
    )
