"""Workers that die before they can take work, again and again, stop the runner with the
cause and its fix instead of being respawned forever; workers killed after they started
are still replaced (tests/runner/test_worker_crash.py)."""

from __future__ import annotations

import os
import signal
import time

from pynenc import Pynenc

from pynenc_django.runner import EARLY_DEATHS_LIMIT
from tests.project_noguard.broken.apps import BROKEN
from tests.runner.conftest import (
    REPO,
    WORKER_STARTED,
    RunnerProcess,
    Runners,
    wait_until,
)

NOGUARD = REPO / "tests" / "project_noguard"
STOP_WITHIN_SEC = 90  # a handful of worker starts, each a Django setup, on a busy machine


def start_noguard_runner(runners: Runners) -> RunnerProcess:
    """``manage.py pynenc_runner`` of a project whose manage.py lacks the main guard."""
    return runners.manage(
        "pynenc_runner", "--processes", "2", name="noguard-runner", manage_py=NOGUARD / "manage.py"
    )


def test_unguarded_manage_py_stops_the_runner_with_the_fix(app: Pynenc, runners: Runners) -> None:
    runner = start_noguard_runner(runners)
    code = runner.wait_exit(STOP_WITHIN_SEC)
    log = runner.log()
    assert code != 0, runner.tail()
    assert f"{EARLY_DEATHS_LIMIT} worker processes in a row died before" in log, runner.tail()
    assert "stopping instead of respawning them forever" in log, runner.tail()
    assert 'no `if __name__ == "__main__":` guard' in log, runner.tail()
    assert str(NOGUARD / "manage.py") in log, "the message names the module to fix"
    assert "WorkersCannotStartError" in log, runner.tail()
    assert "Traceback" not in log, runner.tail()
    assert "bootstrapping phase" not in log, runner.tail()
    spawned = len(runner.workers())
    assert spawned <= EARLY_DEATHS_LIMIT + 2, f"{spawned} workers spawned\n{runner.tail()}"
    # Only the runner printed its banner: no worker re-ran the command that far.
    assert log.count("pynenc runner\n") == 1, runner.tail()


def test_workers_that_fail_to_start_stop_the_runner_with_their_error(
    app: Pynenc, runners: Runners
) -> None:
    runner = runners.start(
        processes=2,
        wait=False,
        env={"DJANGO_SETTINGS_MODULE": "tests.project_noguard.settings_broken_workers"},
    )
    code = runner.wait_exit(STOP_WITHIN_SEC)
    log = runner.log()
    assert code != 0, runner.tail()
    assert f"{EARLY_DEATHS_LIMIT} worker processes in a row died before" in log, runner.tail()
    assert f"(RuntimeError: {BROKEN})" in log, "the message names the workers' own error"
    assert "WorkersCannotStartError" in log, runner.tail()


def test_workers_killed_after_they_started_are_replaced_every_time(
    app: Pynenc, runners: Runners
) -> None:
    runner = runners.start(processes=1)
    for round_ in range(EARLY_DEATHS_LIMIT + 1):
        started = [int(pid) for pid in WORKER_STARTED.findall(runner.log())]
        assert len(started) == round_ + 1, runner.tail()
        os.kill(started[-1], signal.SIGKILL)
        wait_until(
            lambda n=round_ + 2: len(WORKER_STARTED.findall(runner.log())) >= n,
            60,
            lambda r=round_: f"no worker started after kill {r + 1}\n{runner.tail()}",
        )
    time.sleep(1)
    assert not runner.exited(), runner.tail()
    assert "died before they could take work" not in runner.log(), runner.tail()
