"""An ordinary task failure: FAILED, logged once by pynenc, never taken for a storage failure."""

from __future__ import annotations

from types import ModuleType

import pytest
from pynenc import Pynenc

from tests.runner.conftest import (
    KILLED,
    REROUTED,
    Runners,
    describe,
    history_statuses,
    statuses,
    wait_all_success,
    wait_until,
)

FAILED = "failed"


def test_a_failing_task_is_failed_and_logged_once_without_a_reroute(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str
) -> None:
    runner = runners.start(processes=1)
    message = f"task-failure-{tag}"
    failing = tasks.fail(message)
    failed_id = failing.invocation_id
    wait_until(
        lambda: statuses(app, [failed_id]).get(failed_id) == FAILED,
        60,
        lambda: (
            f"the failing task never became FAILED:\n{describe(app, [failed_id])}\n{runners.diag()}"
        ),
    )
    # The one worker runs invocations one at a time: once the next one has succeeded,
    # everything the worker logs about the failure has been logged.
    after = tasks.add(2, 3)
    wait_all_success(app, [after.invocation_id], 60, runners.diag)
    assert after.result == 5

    with pytest.raises(ValueError, match=message):
        _ = failing.result
    trail = history_statuses(app, failed_id)
    assert trail[-1] == FAILED, describe(app, [failed_id])
    assert KILLED not in trail and REROUTED not in trail, (
        f"a task's own failure was rerouted: {trail}\n{runner.tail()}"
    )

    log = runner.log()
    tracebacks = log.count("Traceback (most recent call last)")
    raised = log.count(f"ValueError: {message}")
    assert (tracebacks, raised) == (1, 1), (
        f"expected one traceback for the failure, found {tracebacks} "
        f"({raised} with its message)\n{runner.tail(80)}"
    )
    for storage_failure in ("Error executing invocation", "rerouting", "could not store"):
        assert storage_failure not in log, (
            f"the task's own failure was logged as a storage failure ({storage_failure!r})\n"
            f"{runner.tail(80)}"
        )
