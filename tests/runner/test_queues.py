"""A queue that only a task declares (``@app.task(queue="emails")``, not in
``PYNENC["queues"]``) is a real queue: ``pynenc_runner --queues emails`` starts and runs
its tasks, and only them (``tests/project/jobs/queues.py``, autodiscovered with
``tests.project.settings_queues``).

The tasks are enqueued by a ``manage.py shell`` of that project, so this test process
never registers them (its app would then warn, W002, in every later check).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pynenc import Pynenc

from tests.runner.conftest import SUCCESS, Runners, describe, statuses, wait_all_success

SETTINGS = {"DJANGO_SETTINGS_MODULE": "tests.project.settings_queues"}

ENQUEUE = """
import json, sys
from tests.project.jobs.queues import on_default_queue, send_email
email = send_email("ada", sys.argv[1])
default = on_default_queue("default-task", sys.argv[1])
print("ENQUEUED " + json.dumps([email.invocation_id, default.invocation_id]))
"""


def _enqueue(runners: Runners, record: Path) -> tuple[str, str]:
    """Enqueue one ``emails`` task and one ``default`` task; their invocation ids."""
    shell = runners.manage(
        "shell", "-c", ENQUEUE.replace("sys.argv[1]", repr(str(record))), env=SETTINGS
    )
    assert shell.wait_exit(60) == 0, shell.tail()
    line = shell.wait_for_log(r"ENQUEUED (\[.*\])")
    email, default = json.loads(line.group(1))
    return email, default


def test_a_runner_for_a_queue_a_task_declares_runs_its_tasks_only(
    app: Pynenc, runners: Runners, tmp_path: Path
) -> None:
    runner = runners.start("--queues", "emails", processes=1, env=SETTINGS)
    runner.wait_for_log(r"queues\s+emails\n")
    record = tmp_path / "records.txt"
    email, default = _enqueue(runners, record)

    wait_all_success(app, [email], 60, runners.diag)
    assert record.read_text().split()[0] == "email-ada", record.read_text()
    worker_pids = set(runner.workers())
    assert int(record.read_text().split()[1]) in worker_pids, runners.diag()

    time.sleep(1.0)  # the default-queue task had every chance to be taken
    assert statuses(app, [default]).get(default) != SUCCESS, describe(app, [default])
    assert "default-task" not in record.read_text(), "a runner of 'emails' ran a default task"


def test_a_queue_nobody_declares_still_exits_2(app: Pynenc, runners: Runners) -> None:
    process = runners.start("--queues", "nope", wait=False, env=SETTINGS)
    assert process.wait_exit(60) == 2, process.tail()
    log = process.log()
    assert "Unknown queue(s) 'nope'" in log, process.tail()
    assert "The broker declares: default" in log, process.tail()
    assert "tasks route to: emails" in log, process.tail()
    assert "Traceback" not in log, process.tail()


ENQUEUE_ELSEWHERE = """
import json
from tests.project.jobs.queues import on_default_queue
moved = on_default_queue.apply_async(args=("moved", RECORD), queue="emails", priority=3)
print("ENQUEUED " + json.dumps(moved.invocation_id))
"""


def test_apply_async_queue_sends_a_call_to_another_queue(
    app: Pynenc, runners: Runners, tmp_path: Path
) -> None:
    """``apply_async(queue=...)``: a default-queue task's call runs on a runner of the
    queue the call named, which consumes nothing else."""
    from pynenc_django.models import BrokerMessage

    record = tmp_path / "records.txt"
    shell = runners.manage(
        "shell", "-c", ENQUEUE_ELSEWHERE.replace("RECORD", repr(str(record))), env=SETTINGS
    )
    assert shell.wait_exit(60) == 0, shell.tail()
    moved = json.loads(shell.wait_for_log(r"ENQUEUED (\".*\")").group(1))
    message = BrokerMessage.objects.get(app_id=app.app_id, invocation_id=moved)
    assert (message.queue, message.priority) == ("emails", 3.0)

    runner = runners.start("--queues", "emails", processes=1, env=SETTINGS)
    wait_all_success(app, [moved], 60, runners.diag)
    label, pid = record.read_text().split()
    assert label == "moved" and int(pid) in set(runner.workers()), runners.diag()
