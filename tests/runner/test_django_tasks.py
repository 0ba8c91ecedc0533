"""Django 6 Tasks (``@task`` … ``.enqueue()``) running on a real ``manage.py pynenc_runner``."""

from __future__ import annotations

from types import ModuleType

import pytest
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus

from tests.runner.conftest import Runners, wait_until
from tests.runner.test_enqueue_on_commit import exists

django_tasks = pytest.importorskip("django.tasks", reason="Django Tasks need Django >= 6.0")


def test_django_task_runs_on_pynenc(app: Pynenc, tasks: ModuleType, runners: Runners) -> None:
    runners.start(processes=1)
    result = tasks.django_multiply.enqueue(6, 7)

    assert exists(app, result.id), "TaskResult.id is the pynenc invocation id"
    done = wait_until(
        lambda: (r := tasks.django_multiply.get_result(result.id)).is_finished and r,
        60,
        runners.diag,
    )
    assert done.status == django_tasks.TaskResultStatus.SUCCESSFUL
    assert done.return_value == 42
    assert done.args == [6, 7]
    assert done.started_at is not None and done.finished_at >= done.started_at
    assert len(done.worker_ids) == 1


def test_django_task_failure_reports_the_exception(
    app: Pynenc, tasks: ModuleType, runners: Runners
) -> None:
    runners.start(processes=1)
    result = tasks.django_fail.enqueue("boom")
    done = wait_until(
        lambda: (r := tasks.django_fail.get_result(result.id)).is_finished and r,
        60,
        runners.diag,
    )
    assert done.status == django_tasks.TaskResultStatus.FAILED
    assert done.errors[0].exception_class_path == "builtins.ValueError"
    assert "boom" in done.errors[0].traceback
    assert app.orchestrator.get_invocation_status(result.id) == InvocationStatus.FAILED


def test_django_task_context(app: Pynenc, tasks: ModuleType, runners: Runners) -> None:
    runners.start(processes=1)
    result = tasks.django_attempt.enqueue("ctx")
    done = wait_until(
        lambda: (r := tasks.django_attempt.get_result(result.id)).is_finished and r,
        60,
        runners.diag,
    )
    assert done.return_value == 1


def test_unsupported_options_are_rejected(tasks: ModuleType) -> None:
    from datetime import datetime

    naive = datetime.now()  # noqa: DTZ005 - the point of the test
    with pytest.raises(django_tasks.exceptions.InvalidTask, match="run_after.*naive"):
        tasks.django_multiply.using(run_after=naive).enqueue(1, 2)
    with pytest.raises(django_tasks.exceptions.InvalidTask, match="not valid|broker queues"):
        tasks.django_multiply.using(queue_name="nope").enqueue(1, 2)


def test_unknown_result_id(tasks: ModuleType) -> None:
    with pytest.raises(django_tasks.exceptions.TaskResultDoesNotExist):
        tasks.django_multiply.get_result("no-such-invocation")
