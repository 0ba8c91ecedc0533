"""The runner SIGKILLed: its workers finish what they hold and exit; nothing is lost."""

from __future__ import annotations

import signal
import time
from types import ModuleType

from pynenc import Pynenc

from tests.runner.conftest import (
    Runners,
    assert_success_exactly_once,
    create_times,
    describe,
    process_gone,
    running_owned_by,
    wait_all_success,
    wait_until,
)

ORPHAN_EXIT_LIMIT_SEC = 10.0


def test_workers_of_a_killed_runner_exit_and_a_new_runner_finishes_everything(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str
) -> None:
    first = runners.start(processes=2, name="killed-runner")
    invocations = [tasks.sleep_task(1.0, f"{tag}-{i}") for i in range(6)]
    ids = [inv.invocation_id for inv in invocations]
    wait_until(
        lambda: len(running_owned_by(app, ids)) == 2,
        60,
        lambda: f"two invocations never ran together:\n{describe(app, ids)}\n{runners.diag()}",
    )
    workers = create_times(first.workers())
    assert len(workers) == 2, first.tail()

    first.send(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait_exit(10)
    wait_until(
        lambda: all(process_gone(pid, created) for pid, created in workers.items()),
        ORPHAN_EXIT_LIMIT_SEC,
        lambda: (
            f"workers still alive {ORPHAN_EXIT_LIMIT_SEC}s after their runner was killed: "
            f"{[pid for pid, created in workers.items() if not process_gone(pid, created)]}\n"
            f"{runners.diag()}"
        ),
        interval=0.1,
    )
    print(f"orphaned workers gone {time.monotonic() - killed_at:.2f}s after the kill")
    assert "lost its runner" in first.log(), first.tail()

    second = runners.start(processes=2, name="second-runner")
    wait_all_success(app, ids, 90, runners.diag)
    assert_success_exactly_once(app, ids, runners.diag())
    assert [inv.result for inv in invocations] == [f"{tag}-{i}" for i in range(6)]
    assert not second.exited(), second.tail()
