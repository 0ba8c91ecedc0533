"""Tasks of the revoke and time-limit tests (``tests/runner/test_revoke.py``,
``tests/runner/test_time_limits.py``). Each execution appends ``<event> <pid> <unix
time>`` to ``record_path`` (:func:`tests.project.jobs.calling.record`): what ran, where,
when, and how far it got, from the task's own side.

Their limits are set in ``tests/settings.py`` (``PYNENC["task"]``), by key and by pattern.
"""

import time

from pynenc_django import app
from pynenc_django.exceptions import SoftTimeLimitExceeded
from tests.project.jobs.calling import record, records


@app.task
def sleeper(seconds: float, record_path: str) -> str:
    """No limits: runs ``seconds``, recording its start and its end."""
    record(record_path, "start")
    time.sleep(seconds)
    record(record_path, "finish")
    return "slept"


@app.task
def over_hard_limit(seconds: float, record_path: str) -> str:
    """``time_limit`` 1 s: a ``seconds`` sleep longer than that never finishes."""
    record(record_path, "start")
    time.sleep(seconds)
    record(record_path, "finish")
    return "slept"


@app.task
def soft_cleanup(seconds: float, record_path: str) -> str:
    """``soft_time_limit`` 0.5 s (``time_limit`` 10 s): busy for up to ``seconds``, it
    catches ``SoftTimeLimitExceeded``, records it and returns early."""
    record(record_path, "start")
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded as exc:
        record(record_path, f"soft-{exc.soft_time_limit:g}")
        return "cleaned up"
    record(record_path, "finish")
    return "finished"


@app.task
def soft_waiting_parent(child_seconds: float, record_path: str) -> str:
    """``soft_time_limit`` 0.5 s: waits for a ``sleeper`` child longer than that, which
    runs nested in this wait on a single worker. The soft limit must not interrupt the
    child: it reaches this task once the child's run has returned."""
    record(record_path, "parent-start")
    child = sleeper(child_seconds, record_path)
    try:
        _ = child.result
        time.sleep(5)  # not reached before the soft limit: it was due long ago
    except SoftTimeLimitExceeded:
        record(record_path, "parent-soft")
        return "cleaned up"
    record(record_path, "parent-finish")
    return "finished"


@app.task
def parent_of_sleeper(record_path: str) -> str:
    """Waits for a ``sleeper`` child (which runs nested in this wait on a single worker):
    30 s on its first attempt, 0.1 s when run again."""
    first = not any(event == "parent-start" for event, _, _ in records(record_path))
    record(record_path, "parent-start")
    return sleeper(30 if first else 0.1, record_path).result
