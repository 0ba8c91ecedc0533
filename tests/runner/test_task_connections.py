"""The worker's own database work does not depend on ``CONN_MAX_AGE``; task code keeps
Django's per-request connection hygiene (:mod:`pynenc_django.runner.task_connections`).

The test project runs with Django's default ``CONN_MAX_AGE = 0``. Every new connection of
every runner process is logged by Django's ``connection_created`` signal (the test
project's ``CONNECTION_LOG_ENV`` hook), and the tasks report their own session.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pynenc import Pynenc

from tests.project.jobs.apps import CONNECTION_LOG_ENV
from tests.runner.conftest import Runners, assert_success_exactly_once, statuses

CALLS = 30


def connections_by_pid(log: Path, *running: str) -> Counter[int]:
    """New connections per process, opened while one of the ``running`` task ids ran
    ("-": none). pynenc's own core tasks (its recovery, say) may run in the same worker
    meanwhile, and get a connection of their own like any task's."""
    if not log.exists():
        return Counter()
    lines = [line.split() for line in log.read_text().splitlines()]
    return Counter(int(pid) for pid, _, task in lines if task in running)


def start_logged(runners: Runners, tmp_path: Path) -> tuple[Path, int]:
    """One runner with one worker, logging new connections; the worker's pid."""
    log = tmp_path / "connections.log"
    runner = runners.start(processes=1, env={CONNECTION_LOG_ENV: str(log)})
    [worker_pid] = runner.workers()
    return log, worker_pid


def test_tasks_that_do_not_touch_the_database_open_no_connection(
    app: Pynenc, runners: Runners, tmp_path: Path
) -> None:
    from tests.project.jobs import connections as jobs

    log, worker_pid = start_logged(runners, tmp_path)
    assert jobs.no_database(-1).result == worker_pid  # warmed up: connected once
    # The worker's own connections, and any its tasks would open.
    running = ("-", jobs.no_database.task_id.key)
    before = connections_by_pid(log, *running)[worker_pid]

    invocations = [jobs.no_database(i) for i in range(CALLS)]
    assert {invocation.result for invocation in invocations} == {worker_pid}

    opened = connections_by_pid(log, *running)[worker_pid] - before
    assert opened == 0, (
        f"the worker opened {opened} connections for {CALLS} invocations whose tasks never "
        f"touch the database (CONN_MAX_AGE=0): its own work reconnects\n{runners.diag()}"
    )


def test_task_code_gets_a_fresh_connection_per_task_as_a_request_would(
    app: Pynenc, runners: Runners, tmp_path: Path
) -> None:
    from tests.project.jobs import connections as jobs

    log, worker_pid = start_logged(runners, tmp_path)
    jobs.no_database(-1).result  # noqa: B018 (warm-up)
    task = jobs.database_session.task_id.key
    before = connections_by_pid(log, task)[worker_pid]

    sessions = [jobs.database_session(i).result for i in range(CALLS)]
    assert {session.split()[0] for session in sessions} == {str(worker_pid)}
    # PostgreSQL and MariaDB: every task saw a session of its own (CONN_MAX_AGE=0 closes
    # the task's connection after it). SQLite's id may be reused by a new connection.
    if not sessions[0].split()[1].startswith("sqlite-"):
        assert len(set(sessions)) == CALLS, sessions
    opened = connections_by_pid(log, task)[worker_pid] - before
    assert opened == CALLS, (
        f"{opened} new connections in the worker for {CALLS} tasks that each query the "
        f"database once: expected exactly one per task (the task's own; the worker's "
        f"stays open)\n{runners.diag()}"
    )


def test_submissions_inside_a_task_transaction_follow_its_commit_or_rollback(
    app: Pynenc, runners: Runners, tag: str
) -> None:
    from tests.project.jobs import connections as jobs

    runners.start(processes=1)
    rolled_back = jobs.submit_in_atomic(f"{tag}-rb", commit=False).result
    committed = jobs.submit_in_atomic(f"{tag}-ok", commit=True).result

    known = statuses(app)
    assert not set(rolled_back) & set(known), (
        f"children submitted inside a rolled-back transaction of a task exist: "
        f"{ {i: known[i] for i in rolled_back if i in known} }"
    )
    children = [app.state_backend.get_invocation(i) for i in committed]
    assert [child.result for child in children] == [f"{tag}-ok-direct", f"{tag}-ok-on-commit"]
    assert_success_exactly_once(app, committed, runners.diag())
