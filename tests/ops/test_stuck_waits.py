"""``pynenc_status`` reports a stuck wait: a running invocation waiting, past
``django_stuck_wait_after_sec``, for one no worker takes while its own worker runs nothing
else. Real runner processes on the test database; never a wait on a running child."""

from __future__ import annotations

import importlib
import io
import os
import sys
import textwrap
import time
from collections.abc import Generator
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest
from django.core.management import call_command
from django.db.models import F
from pynenc import Pynenc
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus as S
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.models import BlockingEdge, Invocation, InvocationHistory
from pynenc_django.ops.status import collect_status
from pynenc_django.utils import now_utc
from tests.runner import conftest as runner_tests
from tests.runner.conftest import SUCCESS, Runners, describe, statuses, wait_until

# The runner tests' fixtures: the project's app (purged around the test) and its processes.
app = runner_tests.app
runners = runner_tests.runners

QUEUE = "stranded"  # declared by the broker, consumed by no runner
CHILD_SEC = 4.0
TASKS = f"""
    import time

    from pynenc import ConcurrencyControlType

    from pynenc_django import app


    @app.task(queue={QUEUE!r})
    def stranded(x: int) -> int:
        return x


    @app.task
    def waits_for_stranded(x: int) -> int:
        return stranded(x).result


    @app.task
    def slow(seconds: float) -> float:
        time.sleep(seconds)
        return seconds


    @app.task
    def waits_for_slow(seconds: float) -> float:
        return slow(seconds).result


    @app.task(
        running_concurrency=ConcurrencyControlType.TASK, reroute_on_concurrency_control=True
    )
    def exclusive(depth: int) -> int:
        return exclusive(depth - 1).result + 1 if depth else 0
"""


@pytest.fixture
def stuck_tasks(app: Pynenc, tmp_path: Path) -> Generator[ModuleType, None, None]:
    """Parent and child tasks in a module of their own, importable here and by the runners
    started with :func:`runner_env`."""
    name = f"stuck_waits_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TASKS))
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
        # Unregister them too: the project app outlives the test, and its system checks
        # would see a task on a queue no runner consumes (pynenc_django.W002).
        for task_id in [t for t in app._tasks if t.module == name]:
            del app._tasks[task_id]


def runner_env(tmp_path: Path) -> dict[str, str]:
    """The broker also declares :data:`QUEUE` (the runner's own queues are its option)."""
    path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path), "PYNENC__CONFIGBROKER__QUEUES": f"default,{QUEUE}"}


def probe() -> tuple[int, str]:
    """``manage.py pynenc_status`` in this process: (exit code, output)."""
    out = io.StringIO()
    try:
        call_command("pynenc_status", stdout=out)
    except SystemExit as exited:
        return int(exited.code or 0), out.getvalue()
    return 0, out.getvalue()


def wait_of(app: Pynenc, waiter_id: str) -> BlockingEdge | None:
    return BlockingEdge.objects.for_app(app.app_id).filter(waiter_id=waiter_id).first()


def test_a_wait_on_a_queue_no_runner_consumes_is_stuck_after_the_bound(
    app: Pynenc,
    stuck_tasks: ModuleType,
    runners: Runners,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bound = 2.0
    monkeypatch.setenv("PYNENC__DJANGO_STUCK_WAIT_AFTER_SEC", str(bound))
    runners.start("--queues", "default", processes=1, env=runner_env(tmp_path))
    parent_id = stuck_tasks.waits_for_stranded(1).invocation_id
    edge = wait_until(lambda: wait_of(app, parent_id), 30, runners.diag)
    child_id = edge.waited_id

    code, output = probe()
    waited = (now_utc() - edge.created_at).total_seconds()
    assert waited < bound, f"probed {waited:.1f}s into the wait, too late to tell"
    assert code == 0, output

    time.sleep(max(0.0, bound + 0.5 - (now_utc() - edge.created_at).total_seconds()))
    status = runners.manage("pynenc_status", name="status")
    assert status.wait_exit(60) == 1, status.tail()
    output = status.log()
    assert "UNHEALTHY" in output, output
    [stuck] = [line for line in output.splitlines() if "stuck wait" in line]
    assert parent_id in stuck and child_id in stuck, stuck
    assert f"its queue '{QUEUE}' is consumed by no live runner" in stuck, stuck
    assert statuses(app, [parent_id, child_id]) == {parent_id: "running", child_id: "registered"}
    # The admin overview shows the same.
    from django.test import RequestFactory

    from pynenc_django.admin.overview import overview_context

    shown = overview_context(RequestFactory().get("/"), app.app_id)["stuck_waits"]
    assert [line for line in shown if parent_id in line and QUEUE in line], shown


def test_a_wait_on_a_child_its_own_waiter_holds_back_is_stuck_after_the_bound(
    app: Pynenc,
    stuck_tasks: ModuleType,
    runners: Runners,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other worker takes the child and concurrency control reroutes it, again and
    again: its status stays fresh, never claimed."""
    bound = 2.0
    monkeypatch.setenv("PYNENC__DJANGO_STUCK_WAIT_AFTER_SEC", str(bound))
    runners.start(processes=2, env=runner_env(tmp_path))
    parent_id = stuck_tasks.exclusive(1).invocation_id
    edge = wait_until(lambda: wait_of(app, parent_id), 30, runners.diag)

    code, output = probe()
    waited = (now_utc() - edge.created_at).total_seconds()
    assert waited < bound, f"probed {waited:.1f}s into the wait, too late to tell"
    assert code == 0, output

    time.sleep(max(0.0, bound + 0.5 - (now_utc() - edge.created_at).total_seconds()))
    code, output = probe()
    assert code == 1, f"{output}\n{statuses(app, [parent_id, edge.waited_id])}"
    [stuck] = [line for line in output.splitlines() if "stuck wait" in line]
    assert parent_id in stuck and edge.waited_id in stuck, stuck
    assert stuck.endswith("concurrency control holds it back"), stuck


def test_a_wait_on_a_running_child_is_never_stuck(
    app: Pynenc,
    stuck_tasks: ModuleType,
    runners: Runners,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bound = 1.0
    monkeypatch.setenv("PYNENC__DJANGO_STUCK_WAIT_AFTER_SEC", str(bound))
    runners.start(processes=2, env=runner_env(tmp_path))
    parent = stuck_tasks.waits_for_slow(CHILD_SEC)
    edge = wait_until(lambda: wait_of(app, parent.invocation_id), 30, runners.diag)
    probed_past_bound = 0

    def healthy_until_done() -> bool:
        nonlocal probed_past_bound
        past_bound = (now_utc() - edge.created_at).total_seconds() > bound
        code, output = probe()
        ids = [parent.invocation_id, edge.waited_id]
        assert code == 0, f"{output}\n{describe(app, ids)}\n{runners.diag()}"
        probed_past_bound += past_bound
        return statuses(app, [parent.invocation_id])[parent.invocation_id] == SUCCESS

    wait_until(healthy_until_done, 30, runners.diag, interval=0.2)
    assert parent.result == CHILD_SEC
    assert probed_past_bound >= 3, "the child finished before the wait was ever past the bound"


# ---------------------------------------------------------------------------- the rule

WORKER = RunnerContext("Test", runner_id="stuck-waits-worker")
ELSEWHERE = RunnerContext("Test", runner_id="stuck-waits-elsewhere")


def echo(value: str) -> str:
    return value


def running(app: Pynenc, value: str, ctx: RunnerContext) -> InvocationId:
    invocation_id = app.task(echo)(value).invocation_id
    app.orchestrator.set_invocation_status(invocation_id, S.PENDING, ctx)
    app.orchestrator.set_invocation_status(invocation_id, S.RUNNING, ctx)
    return invocation_id


def age(app: Pynenc, invocation_id: str) -> None:
    """Every wait, and ``invocation_id``'s status changes so far, two minutes older."""
    shift = timedelta(minutes=2)
    scoped = {"app_id": app.app_id, "invocation_id": invocation_id}
    BlockingEdge.objects.for_app(app.app_id).update(created_at=F("created_at") - shift)
    InvocationHistory.objects.filter(**scoped).update(timestamp=F("timestamp") - shift)
    Invocation.objects.filter(**scoped).update(status_timestamp=F("status_timestamp") - shift)


def stuck_waits(app: Pynenc) -> list[str]:
    report = collect_status(
        app.app_id,
        "default",
        dead_after=timedelta(minutes=10),
        atomic_interval=timedelta(minutes=5),
        worker_runners=False,
        stuck_wait_after=timedelta(seconds=60),
    )
    return [problem for problem in report.problems if problem.startswith("stuck wait")]


def test_a_wait_is_stuck_while_its_worker_runs_nothing_else_and_no_worker_takes_it(
    app_instance: Pynenc,
) -> None:
    app = app_instance
    app.orchestrator.register_runner_heartbeats([WORKER.runner_id])  # every queue
    waiter = running(app, "waiter", WORKER)
    queued = app.task(echo)("queued").invocation_id
    app.orchestrator.waiting_for_results(waiter, [queued])
    assert stuck_waits(app) == [], "a wait younger than the bound"

    age(app, queued)
    [stuck] = stuck_waits(app)
    assert waiter in stuck and queued in stuck and WORKER.runner_id in stuck, stuck
    assert stuck.endswith("no worker took it from queue 'default'"), stuck

    busy = running(app, "busy", WORKER)
    assert stuck_waits(app) == [], "its worker runs another invocation"

    app.orchestrator.waiting_for_results(busy, [running(app, "elsewhere", ELSEWHERE)])
    [stuck] = stuck_waits(app)
    assert waiter in stuck and queued in stuck, "every invocation of its worker waits"

    # Concurrency control rerouting it keeps its status fresh; its history tells.
    for status in (S.CONCURRENCY_CONTROLLED, S.REROUTED):
        app.orchestrator.set_invocation_status(queued, status, ELSEWHERE)
    [stuck] = stuck_waits(app)
    assert stuck.endswith("concurrency control holds it back"), stuck

    # Taken since, and back in its queue (its worker died): not stuck (yet).
    for status in (S.PENDING, S.REROUTED):
        app.orchestrator.set_invocation_status(queued, status, ELSEWHERE)
    assert stuck_waits(app) == []


def test_a_wait_for_a_delayed_invocation_is_not_stuck(app_instance: Pynenc) -> None:
    """A countdown (or a retry's backoff) longer than the bound is a wait for its time,
    not a stuck one; once due and queued, the usual rule applies again."""
    import pynenc_django  # noqa: F401 - apply_async

    app = app_instance
    app.orchestrator.register_runner_heartbeats([WORKER.runner_id])
    waiter = running(app, "waiter", WORKER)
    later = app.task(echo).apply_async(args=("later",), countdown=3600).invocation_id
    app.orchestrator.waiting_for_results(waiter, [later])
    age(app, later)
    assert stuck_waits(app) == [], "waiting for its due time"

    moved = app.broker.promote_due(now_utc() + timedelta(hours=2))
    assert moved == 1
    [stuck] = stuck_waits(app)
    assert waiter in stuck and later in stuck, stuck
