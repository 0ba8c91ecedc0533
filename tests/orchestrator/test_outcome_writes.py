"""What a worker writes when an invocation ends can never replace a better outcome.

* pynenc records any exception raised in ``DistributedInvocation.run`` as the task's
  failure: a database error of our own RUNNING or result write must not end the
  invocation FAILED (nothing ran, or its result was lost), it must stay unfinished so
  its worker puts it back in its queue.
* A late run (its worker's host stalled past the runner-loss bound, the invocation was
  recovered and run again elsewhere) must not overwrite the result of the run that
  counted, although pynenc stores the result before it tries SUCCESS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import OperationalError, connection
from pynenc import Pynenc
from pynenc.exceptions import InvocationStatusError
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

LATE = RunnerContext("PPRWorker", runner_id="late-worker")
OTHER = RunnerContext("PPRWorker", runner_id="other-worker")


def double(x: int) -> int:
    return 2 * x


@contextmanager
def failing(matches: Callable[[str], bool], times: int = 1) -> Iterator[list[str]]:
    """The database refuses the next ``times`` statements ``matches`` accepts, as a full
    disk or a dropped table would (an error that is neither transient nor a lost
    connection, so nothing retries it)."""
    refused: list[str] = []

    def execute(run: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if len(refused) < times and matches(sql):
            refused.append(sql)
            raise OperationalError("could not extend file: No space left on device")
        return run(sql, params, many, context)

    with connection.execute_wrapper(execute):
        yield refused


def claimed(app: Pynenc, ctx: RunnerContext) -> Any:
    found = list(app.orchestrator.get_invocations_to_run(1, ctx))
    assert len(found) == 1
    return found[0]


def test_a_running_write_that_fails_is_not_a_task_failure(app_instance: Pynenc) -> None:
    invocation = app_instance.task(double)(21)
    mine = claimed(app_instance, LATE)

    def running_update(sql: str) -> bool:
        return sql.lstrip().upper().startswith("UPDATE") and "pynenc_invocation" in sql

    with failing(running_update) as refused, pytest.raises(OperationalError):
        mine.run(LATE)

    assert refused, "the RUNNING write was never attempted"
    record = app_instance.orchestrator.get_invocation_status_record(invocation.invocation_id)
    assert record.status == InvocationStatus.PENDING, "nothing ran: it must not be final"
    statuses = [
        h.status_record.status
        for h in app_instance.state_backend.get_history(invocation.invocation_id)
    ]
    assert InvocationStatus.FAILED not in statuses


def test_a_result_write_that_fails_is_not_a_task_failure(app_instance: Pynenc) -> None:
    invocation = app_instance.task(double)(21)
    mine = claimed(app_instance, LATE)

    def result_write(sql: str) -> bool:
        return "pynenc_state_result" in sql and "SELECT i.status" not in sql

    with failing(result_write) as refused, pytest.raises(OperationalError):
        mine.run(LATE)

    assert refused
    record = app_instance.orchestrator.get_invocation_status_record(invocation.invocation_id)
    assert record.status == InvocationStatus.RUNNING, "the outcome was lost: not final"


def test_a_late_run_never_overwrites_the_result_that_counted(app_instance: Pynenc) -> None:
    task = app_instance.task(double)
    invocation = task(21)
    late = claimed(app_instance, LATE)
    orchestrator = app_instance.orchestrator
    orchestrator.set_invocation_status(invocation.invocation_id, InvocationStatus.RUNNING, LATE)

    # The late worker's host stalls; its invocation is recovered and run elsewhere.
    orchestrator.set_invocation_status(invocation.invocation_id, InvocationStatus.KILLED, LATE)
    orchestrator.reroute_invocations({invocation.invocation_id}, OTHER)
    rerun = claimed(app_instance, OTHER)
    rerun.run(OTHER)
    assert invocation.result == 42

    with pytest.raises(InvocationStatusError):
        orchestrator.set_invocation_result(late, "late and wrong", LATE)

    assert app_instance.state_backend.get_result(invocation.invocation_id) == 42
