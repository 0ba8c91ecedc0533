"""PostgreSQL restarted, or crashed, under a running runner: every invocation still
succeeds, with exactly one SUCCESS.

A crash (``stop -m immediate``: no checkpoint, recovery from the WAL) may forget the
claims and RUNNINGs of its last moments, which commit without waiting for the flush
(``django_async_claim_commits``): those invocations are queued or PENDING again and run
again, as after a worker crash. Submissions and final statuses are never forgotten.

The server restarted is a private one this test starts (``tests/servers.py``), never the
machine's own: the runners and this process use its copy of the test database for the
length of the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from types import ModuleType

import pytest
from django.db import connection, connections
from pynenc import Pynenc

from tests.runner.conftest import (
    SUCCESS,
    Runners,
    assert_success_exactly_once,
    statuses,
    wait_all_success,
    wait_until,
)
from tests.servers import (
    PostgresServer,
    ServerUnavailable,
    django_database_on,
    private_postgresql,
    unavailable,
)

TASKS = 30


@pytest.fixture
def private_server(runners: Runners) -> Generator[PostgresServer, None, None]:
    """A private PostgreSQL server holding a migrated copy of the test database, which
    this process uses until the test ends; the runners started with its ``env`` too.

    The runners are killed before the server goes away, so none of them outlives it
    retrying its connection.
    """
    if connection.vendor != "postgresql":
        pytest.skip(f"restarts the PostgreSQL server; this run uses {connection.vendor}")
    name = str(connection.settings_dict["NAME"])
    try:
        with private_postgresql() as server:
            try:
                server.create_database(name)
                migrate = runners.manage(
                    "migrate", "--no-input", env=server_env(server), name="migrate"
                )
                code = migrate.wait_exit(180)
                assert code == 0, f"migrate on the private server failed\n{migrate.tail()}"
                with django_database_on(server):
                    yield server
            finally:
                runners.kill_all()
    except ServerUnavailable as exc:
        unavailable(f"cannot start a private PostgreSQL server: {exc}")


def server_env(server: PostgresServer) -> dict[str, str]:
    """The environment that points ``manage.py`` of the test project at ``server``
    (``tests/settings.py`` names the database after ``PYNENC_DJANGO_TEST_DB_SUFFIX``)."""
    return {"DATABASE_URL": server.database_url()}


def wait_for_database(timeout: float = 60) -> None:
    def answers() -> bool:
        try:
            connections.close_all()
            connection.ensure_connection()
            return True
        except Exception:
            return False

    wait_until(answers, timeout, "PostgreSQL did not come back", interval=0.5)


#: How the server goes down and comes back.
OUTAGES: dict[str, Callable[[PostgresServer], None]] = {
    "restart": PostgresServer.restart,  # fast mode: every session is disconnected, WAL flushed
    "crash": PostgresServer.crash,  # stop -m immediate, no checkpoint: WAL recovery at start
}


@pytest.mark.slow
@pytest.mark.timeout(360)
@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_postgresql_outage_mid_run_loses_and_duplicates_nothing(
    app: Pynenc,
    tasks: ModuleType,
    runners: Runners,
    private_server: PostgresServer,
    tag: str,
    outage: str,
) -> None:
    assert connection.settings_dict["PORT"] == private_server.port

    runner = runners.start(processes=2, env=server_env(private_server))
    invocations = [tasks.sleep_task(0.5, f"{tag}-{i}") for i in range(TASKS)]
    ids = [inv.invocation_id for inv in invocations]

    def done() -> int:
        return sum(status == SUCCESS for status in statuses(app, ids).values())

    wait_until(lambda: done() >= 4, 60, runners.diag)
    finished_before = done()
    restarted_at = time.monotonic()
    OUTAGES[outage](private_server)
    print(f"{outage} of the private server took {time.monotonic() - restarted_at:.1f}s")
    wait_for_database()
    assert finished_before < TASKS, "all tasks ended before the restart; the test proved nothing"

    wait_all_success(app, ids, 180, runners.diag)
    assert_success_exactly_once(app, ids, runners.diag())
    assert [inv.result for inv in invocations] == [f"{tag}-{i}" for i in range(TASKS)]
    assert not runner.exited(), runner.tail()
