"""Where the soft limit's ``SIGALRM`` lands in the task, in this process (the worker's
side of ``soft_time_limit``, :class:`pynenc_django.runner.limits.SoftLimit`).

CPython 3.11 to 3.13 run a signal handler at a loop's backward jump, which the exception
table leaves outside the ``try`` around the loop, so an exception the handler raises there
goes past the task's ``except SoftTimeLimitExceeded`` (python/cpython#130279). The
runner's test of a task that cleans up (``test_time_limits.py``) failed that way once in
a few hundred runs; here the loop is built so that about one alarm in six lands on that
jump, and every one must reach the task's handler.

pytest-timeout's own ``SIGALRM`` would be replaced by the limit's: these tests time out
through a thread instead.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from pynenc.util.asyncio_helper import run_task_sync

from pynenc_django.exceptions import SoftTimeLimitExceeded
from pynenc_django.runner.limits import (
    BACKWARD_JUMP_RETRIES,
    BACKWARD_JUMP_RETRY_SEC,
    SoftLimit,
)

pytestmark = pytest.mark.timeout(120, method="thread")

ALARMS = 300


@pytest.fixture
def soft() -> Iterator[SoftLimit]:
    handler = signal.getsignal(signal.SIGALRM)
    limit = SoftLimit(nested=lambda: False)
    yield limit
    limit.disarm()
    signal.signal(signal.SIGALRM, handler)


def busy_with_calls(soft: SoftLimit, seconds: float) -> str:
    """A loop that calls something each turn (most tasks' loops do), between plain
    bytecode where the alarm waits for the loop's backward jump. Armed inside the ``try``:
    on a loaded machine an alarm armed before the call can fall before it."""
    x = 0
    try:
        soft.arm("inv", "task", seconds)
        while time.monotonic() > 0:
            x = x + 1
            x = x + 1
            x = x + 1
            x = x + 1
    except SoftTimeLimitExceeded:
        return "caught"
    return "finished"


def busy_without_calls(soft: SoftLimit, seconds: float, flag: list[bool]) -> str:
    """A loop whose only place to run a signal handler is its backward jump."""
    try:
        soft.arm("inv", "task", seconds)
        while not flag[0]:
            pass
    except SoftTimeLimitExceeded:
        return "caught"
    return "finished"


def test_every_alarm_reaches_the_tasks_except_around_a_loop(soft: SoftLimit) -> None:
    outcomes = {"caught": 0, "escaped": 0}
    for _ in range(ALARMS):
        try:
            assert run_task_sync(busy_with_calls, soft, 0.001) == "caught"
            outcomes["caught"] += 1
        except SoftTimeLimitExceeded:
            outcomes["escaped"] += 1
        finally:
            soft.disarm()
    assert outcomes == {"caught": ALARMS, "escaped": 0}


def test_a_loop_that_calls_nothing_still_gets_the_limit(soft: SoftLimit) -> None:
    """No spot but the jump: after its retries the limit is raised there, past the
    ``except`` on the affected CPythons, but the task does not run on."""
    started = time.monotonic()
    try:
        outcome = run_task_sync(busy_without_calls, soft, 0.01, [False])
    except SoftTimeLimitExceeded as exc:
        outcome = f"raised for {exc.invocation_id}"
    elapsed = time.monotonic() - started
    assert outcome in ("caught", "raised for inv")
    # Its retries bound the delay: 20 of 5 ms; a generous margin for a loaded machine.
    assert elapsed < 0.01 + BACKWARD_JUMP_RETRIES * BACKWARD_JUMP_RETRY_SEC + 5
