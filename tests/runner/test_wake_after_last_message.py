"""A worker with notifications (PostgreSQL's LISTEN, SQLite's signal files) that took its
queue's only message does not look again when the invocation ends: it waits for the next
announcement. Work enqueued while it ran was announced then, so it is picked up at once,
not at the next safety poll."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import ModuleType

import pytest
from django.db import connection
from pynenc import Pynenc

from tests.runner.conftest import RUNNING, SUCCESS, Runners, describe, statuses, wait_until

#: Far beyond the test's deadline: a stranded message would show.
SAFETY_POLL_SEC = "600"


def test_work_enqueued_while_the_only_message_runs_is_not_stranded(
    app: Pynenc, tasks: ModuleType, runners: Runners
) -> None:
    runners.start(processes=1, env={"PYNENC__DJANGO_NOTIFY_SAFETY_POLL_SEC": SAFETY_POLL_SEC})
    tag = uuid.uuid4().hex
    first = tasks.sleep_task(1.0, f"{tag}-first")
    wait_until(
        lambda: statuses(app, [first.invocation_id]).get(first.invocation_id) == RUNNING,
        60,
        lambda: f"the first never ran:\n{describe(app, [first.invocation_id])}\n{runners.diag()}",
    )
    second = tasks.add(2, 3)  # queued while the only worker runs the queue's only message
    ids = [first.invocation_id, second.invocation_id]
    wait_until(
        lambda: set(statuses(app, ids).values()) == {SUCCESS},
        60,
        lambda: f"not both done:\n{describe(app, ids)}\n{runners.diag()}",
    )
    assert second.result == 5
    # Idle again, with both messages gone: the next enqueue still wakes the worker.
    third = tasks.add(3, 4)
    wait_until(
        lambda: statuses(app, [third.invocation_id]).get(third.invocation_id) == SUCCESS,
        60,
        lambda: f"the third never ran:\n{describe(app, [third.invocation_id])}\n{runners.diag()}",
    )


def test_a_worker_on_another_host_still_finds_work(
    app: Pynenc, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """MariaDB/MySQL's signal files reach this host's processes only: a runner that shares
    none with the client (another temporary directory, as on another host) finds the work
    by polling, whether it was idle or has just taken the queue's only message."""
    if connection.vendor != "mysql":
        pytest.skip("signal files are hints on MariaDB/MySQL only (complete elsewhere)")
    runners.start(
        processes=1,
        env={"TMPDIR": str(tmp_path), "PYNENC__DJANGO_NOTIFY_SAFETY_POLL_SEC": SAFETY_POLL_SEC},
    )
    ids = []
    for n in range(3):
        invocation = tasks.add(n, 1)
        ids.append(invocation.invocation_id)
        wait_until(
            lambda i=invocation.invocation_id: statuses(app, [i]).get(i) == SUCCESS,
            60,
            lambda: f"not found by polling:\n{describe(app, ids)}\n{runners.diag()}",
        )
    from pynenc_django.wakeup import signal_dir

    watched = list(tmp_path.rglob("*-work-*"))
    assert watched, "the runner watched its own directory"
    assert signal_dir() not in {str(path.parent) for path in watched}, "not the client's"
