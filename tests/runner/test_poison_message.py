"""An invocation no worker can load is FAILED with the reason, not a poison message.

The client registers an invocation of a task whose module exists only on its side (a
deploy renamed or removed the task while invocations of it were queued). The worker
cannot import it: the invocation must end FAILED with an ``InvocationLoadError`` naming
the task and the import error, its message consumed, the worker alive, and the
invocations queued behind it must run.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from pynenc import Pynenc

from pynenc_django.exceptions import InvocationLoadError
from tests.runner.conftest import (
    SUCCESS,
    Runners,
    history_statuses,
    statuses,
    wait_all_success,
    wait_until,
)

FAILED = "failed"


@pytest.fixture
def client_only_tasks(app: Pynenc, tmp_path: Path) -> ModuleType:
    """A task module importable here and nowhere else."""
    name = f"client_only_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from pynenc_django import app

            @app.task
            def renamed_away(x: int) -> int:
                return x
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
        yield module
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_unimportable_task_fails_with_reason_and_the_queue_moves_on(
    app: Pynenc, tasks: ModuleType, client_only_tasks: ModuleType, runners: Runners
) -> None:
    poison = client_only_tasks.renamed_away(1)
    behind = [tasks.add(i, i) for i in range(5)]
    runner = runners.start(processes=1)

    wait_until(
        lambda: statuses(app, [poison.invocation_id]).get(poison.invocation_id) == FAILED,
        30,
        runners.diag,
    )
    wait_all_success(app, [inv.invocation_id for inv in behind], 30, runners.diag)
    assert [inv.result for inv in behind] == [2 * i for i in range(5)]

    with pytest.raises(InvocationLoadError) as raised:
        poison.result  # noqa: B018
    error = raised.value
    assert error.task_id_key == poison.task.task_id.key
    assert error.error_type == "ModuleNotFoundError"
    assert client_only_tasks.__name__ in str(error)
    assert history_statuses(app, poison.invocation_id) == [
        "registered",
        "pending",
        "running",
        FAILED,
    ]
    # Consumed once, by the one worker, which never died.
    assert len(runner.workers()) == 1, runner.tail()
    assert "exited with code" not in runner.log(), runner.tail()
    assert statuses(app, [poison.invocation_id]) == {poison.invocation_id: FAILED}
    assert SUCCESS not in history_statuses(app, poison.invocation_id)


@pytest.mark.parametrize("left", ["arguments", "nothing"])
def test_a_message_whose_invocation_is_gone_is_dropped_naming_it(
    app: Pynenc, tasks: ModuleType, runners: Runners, left: str
) -> None:
    """A queued message whose invocation's status row was deleted by hand (its arguments'
    row left, or nothing at all) can neither run nor fail. It is consumed with an error
    naming the invocation; it used to crash every worker that popped it, over and over,
    and nothing queued behind it ran."""
    from pynenc_django.models import BrokerMessage, Invocation, StateInvocation

    gone = tasks.add(1, 1)
    Invocation.objects.for_app(app.app_id).filter(invocation_id=gone.invocation_id).delete()
    if left == "nothing":
        rows = StateInvocation.objects.for_app(app.app_id)
        rows.filter(invocation_id=gone.invocation_id).delete()
    behind = [tasks.add(i, i) for i in range(5)]
    runner = runners.start(processes=1)

    wait_all_success(app, [inv.invocation_id for inv in behind], 30, runners.diag)
    assert [inv.result for inv in behind] == [2 * i for i in range(5)]
    queued = BrokerMessage.objects.for_app(app.app_id).filter(invocation_id=gone.invocation_id)
    assert not queued.exists()
    log = runner.log()
    assert f"Dropping message of unknown invocation:{gone.invocation_id}" in log, runner.tail()
    assert len(runner.workers()) == 1, runner.tail()
    assert "exited with code" not in log, runner.tail()
