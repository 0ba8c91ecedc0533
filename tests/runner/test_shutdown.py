"""SIGTERM stops the runner cleanly; a second SIGTERM forces it; nothing is left behind."""

from __future__ import annotations

import signal
import time
from types import ModuleType

from pynenc import Pynenc

from tests.runner.conftest import (
    KILLED,
    SUCCESS,
    Runners,
    active_statuses,
    assert_success_exactly_once,
    create_times,
    describe,
    history_statuses,
    killed_then_rerouted,
    process_gone,
    running_owned_by,
    statuses,
    wait_all_success,
    wait_until,
)

EXIT_TIMEOUT_SEC = 30


def _wait_running(app: Pynenc, invocation_id: str, runners: Runners) -> None:
    wait_until(
        lambda: running_owned_by(app, [invocation_id]),
        60,
        lambda: f"never RUNNING:\n{describe(app, [invocation_id])}\n{runners.diag()}",
    )


def _assert_nothing_active(app: Pynenc, runners: Runners) -> None:
    active = active_statuses(app)
    assert not active, (
        f"invocations left RUNNING/PENDING after the runner exited: {active}\n"
        f"{describe(app, list(active))}\n{runners.diag()}"
    )


def test_sigterm_reroutes_the_running_invocation_and_exits_0(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str
) -> None:
    runner = runners.start(processes=2)
    invocation = tasks.sleep_task(4.0, tag)
    _wait_running(app, invocation.invocation_id, runners)

    runner.send(signal.SIGTERM)
    code = runner.wait_exit(EXIT_TIMEOUT_SEC)

    assert code == 0, runner.tail()
    assert "pynenc runner: stopped" in runner.log(), runner.tail()
    _assert_nothing_active(app, runners)
    assert killed_then_rerouted(app, invocation.invocation_id), (
        f"expected RUNNING > KILLED > REROUTED:\n{describe(app, [invocation.invocation_id])}\n"
        f"{runners.diag()}"
    )

    again = runners.start(processes=1, name="runner-again")
    wait_all_success(app, [invocation.invocation_id], 60, runners.diag)
    assert_success_exactly_once(app, [invocation.invocation_id], runners.diag())
    assert invocation.result == tag
    again.send(signal.SIGTERM)
    assert again.wait_exit(EXIT_TIMEOUT_SEC) == 0, again.tail()


def test_sigterm_with_grace_lets_the_running_invocation_finish(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str
) -> None:
    runner = runners.start(processes=2, env={"PYNENC__DJANGO_SHUTDOWN_GRACE_SEC": "10"})
    invocation = tasks.sleep_task(2.0, tag)
    _wait_running(app, invocation.invocation_id, runners)

    runner.send(signal.SIGTERM)
    code = runner.wait_exit(EXIT_TIMEOUT_SEC)

    assert code == 0, runner.tail()
    trail = history_statuses(app, invocation.invocation_id)
    assert statuses(app, [invocation.invocation_id]) == {invocation.invocation_id: SUCCESS}, (
        f"the running invocation did not finish within the grace period: {trail}\n{runner.tail()}"
    )
    assert KILLED not in trail, trail
    assert trail.count(SUCCESS) == 1, trail
    assert invocation.result == tag
    _assert_nothing_active(app, runners)


def test_second_sigterm_forces_the_stop_and_the_runner_reroutes(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str
) -> None:
    # A long grace period: only the second signal can end this run quickly.
    runner = runners.start(processes=2, env={"PYNENC__DJANGO_SHUTDOWN_GRACE_SEC": "120"})
    invocation = tasks.sleep_task(120.0, tag)
    _wait_running(app, invocation.invocation_id, runners)
    workers = create_times(runner.workers())

    runner.send(signal.SIGTERM)
    time.sleep(0.3)
    runner.send(signal.SIGTERM)
    code = runner.wait_exit(EXIT_TIMEOUT_SEC)

    assert code == 1, runner.tail()
    assert "forced stop" in runner.log(), runner.tail()
    _assert_nothing_active(app, runners)
    assert killed_then_rerouted(app, invocation.invocation_id), (
        f"expected RUNNING > KILLED > REROUTED:\n{describe(app, [invocation.invocation_id])}\n"
        f"{runners.diag()}"
    )
    assert all(process_gone(pid, created) for pid, created in workers.items()), runner.tail()
