"""The runner SIGKILLed: its workers finish what they hold and exit; nothing is lost."""

from __future__ import annotations

import signal
import time
from types import ModuleType

from pynenc import Pynenc

from tests.runner.conftest import (
    SUCCESS,
    Runners,
    assert_success_exactly_once,
    create_times,
    describe,
    now,
    process_gone,
    running_owned_by,
    statuses,
    wait_all_success,
    wait_until,
)

ORPHAN_EXIT_LIMIT_SEC = 10.0
HEARTBEAT_SEC = 1.0
TASK_SEC = 3.0  # long enough for an orphan to beat at least once while finishing it


def test_workers_of_a_killed_runner_exit_and_a_new_runner_finishes_everything(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str
) -> None:
    from pynenc_django.models import RunnerHeartbeat

    first = runners.start(
        processes=2,
        name="killed-runner",
        env={"PYNENC__DJANGO_HEARTBEAT_INTERVAL_SEC": str(HEARTBEAT_SEC)},
    )
    invocations = [tasks.sleep_task(TASK_SEC, f"{tag}-{i}") for i in range(6)]
    ids = [inv.invocation_id for inv in invocations]
    owners = wait_until(
        lambda: (owned := running_owned_by(app, ids)) and len(owned) == 2 and owned,
        60,
        lambda: f"two invocations never ran together:\n{describe(app, ids)}\n{runners.diag()}",
    )
    workers = create_times(first.workers())
    assert len(workers) == 2, first.tail()

    killed_at = now()
    first.send(signal.SIGKILL)
    killed_monotonic = time.monotonic()
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
    print(f"orphaned workers gone {time.monotonic() - killed_monotonic:.2f}s after the kill")

    # What they were running when the runner died was finished, not abandoned ...
    assert set(statuses(app, owners).values()) == {SUCCESS}, describe(app, list(owners))
    # ... and meanwhile each orphan kept its own heartbeat fresh (the dead runner could
    # not), so no recovery service could take its invocation for a dead worker's.
    beats = dict(
        RunnerHeartbeat.objects.for_app(app.app_id)
        .filter(runner_id__in=list(owners.values()))
        .values_list("runner_id", "last_heartbeat")
    )
    stale = {worker: beat for worker, beat in beats.items() if beat <= killed_at}
    assert len(beats) == 2 and not stale, (
        f"orphaned workers did not refresh their heartbeat after the runner died "
        f"(killed at {killed_at.isoformat()}): {beats}\n{runners.diag()}"
    )

    second = runners.start(processes=2, name="second-runner")
    wait_all_success(app, ids, 90, runners.diag)
    assert_success_exactly_once(app, ids, runners.diag())
    assert [inv.result for inv in invocations] == [f"{tag}-{i}" for i in range(6)]
    assert not second.exited(), second.tail()
