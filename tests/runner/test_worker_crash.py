"""A worker SIGKILLed mid-task: its runner reroutes the invocation at once."""

from __future__ import annotations

import os
import signal
from types import ModuleType

from pynenc import Pynenc

from tests.runner.conftest import (
    KILLED,
    REROUTED,
    RUNNING,
    Runners,
    assert_success_exactly_once,
    create_times,
    describe,
    history,
    now,
    process_gone,
    running_owned_by,
    wait_all_success,
    wait_until,
)

RESTART_LIMIT_SEC = 5.0


def test_sigkilled_worker_invocation_runs_again_within_seconds(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str
) -> None:
    runner = runners.start(processes=2)
    invocations = [tasks.sleep_task(2.0, f"{tag}-{i}") for i in range(2)]
    ids = [inv.invocation_id for inv in invocations]

    owners = wait_until(
        lambda: (owned := running_owned_by(app, ids)) and len(owned) == len(ids) and owned,
        60,
        lambda: f"both invocations never ran together:\n{describe(app, ids)}\n{runners.diag()}",
    )
    victim_id, victim_worker = sorted(owners.items())[0]
    victim_pid = runner.worker_pid(victim_worker)
    victim_created = create_times([victim_pid])[victim_pid]
    killed_at = now()
    os.kill(victim_pid, signal.SIGKILL)

    def rerun() -> object:
        return next(
            (
                entry
                for entry in history(app, victim_id)
                if entry.status == RUNNING
                and entry.timestamp > killed_at
                and entry.runner_id not in (None, victim_worker)
            ),
            None,
        )

    restarted = wait_until(
        rerun,
        60,
        lambda: f"killed invocation never ran again:\n{describe(app, ids)}\n{runners.diag()}",
    )
    delay = (restarted.timestamp - killed_at).total_seconds()
    print(f"killed invocation running again after {delay:.3f}s")
    assert delay < RESTART_LIMIT_SEC, (
        f"the killed invocation ran again only {delay:.2f}s after the kill\n"
        f"{describe(app, ids)}\n{runners.diag()}"
    )

    wait_all_success(app, ids, 60, runners.diag)
    assert_success_exactly_once(app, ids, runners.diag())
    assert [inv.result for inv in invocations] == [f"{tag}-{i}" for i in range(2)]

    after_kill = [e.status for e in history(app, victim_id) if e.timestamp >= killed_at]
    assert after_kill[:2] == [KILLED, REROUTED], (
        f"expected KILLED then REROUTED after the kill, got {after_kill}\n{runners.diag()}"
    )
    assert process_gone(victim_pid, victim_created)
    assert runner.wait_for_log(f"Rerouting invocation:{victim_id} of dead worker:{victim_worker}")
    # The pool is refilled: a third worker was spawned and reported in.
    wait_until(lambda: len(runner.workers()) >= 3, 30, runners.diag)
    runner.wait_ready(3)
