"""PostgreSQL restarted, or crashed, under a running runner: every invocation still
succeeds, with exactly one SUCCESS.

A crash (``stop -m immediate``: no checkpoint, recovery from the WAL) may forget the
claims and RUNNINGs of its last moments, which commit without waiting for the flush
(``django_async_claim_commits``): those invocations are queued or PENDING again and run
again, as after a worker crash. Submissions and final statuses are never forgotten."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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

TASKS = 30
LOCAL_HOSTS = ("", "127.0.0.1", "localhost", "::1")


def unavailable(reason: str) -> None:
    """Skip on a developer machine; in CI a missing prerequisite is an error."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)


def local_cluster() -> tuple[str, str]:
    """(version, name) of the local cluster serving the test database, from pg_lsclusters."""
    if not (shutil.which("pg_lsclusters") and shutil.which("pg_ctlcluster")):
        unavailable("pg_lsclusters/pg_ctlcluster (Debian postgresql-common) are not installed")
    settings = connection.settings_dict
    if str(settings.get("HOST") or "") not in LOCAL_HOSTS:
        unavailable(f"the PostgreSQL server {settings.get('HOST')} is not local")
    port = str(settings.get("PORT") or 5432)
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout
    for line in listing.splitlines():
        version, name, cluster_port, status, *_ = line.split()
        if cluster_port == port and status == "online":
            return version, name
    unavailable(f"no online local cluster on port {port} in:\n{listing}")
    raise AssertionError("unreachable")


def wait_for_database(timeout: float = 60) -> None:
    def answers() -> bool:
        try:
            connections.close_all()
            connection.ensure_connection()
            return True
        except Exception:
            return False

    wait_until(answers, timeout, "PostgreSQL did not come back", interval=0.5)


#: How the server goes down and comes back: pg_ctlcluster commands.
OUTAGES = {
    "restart": [["restart"]],  # fast mode: every session is disconnected, WAL flushed
    "crash": [["stop", "-m", "immediate"], ["start"]],  # no checkpoint: WAL recovery
}


@pytest.mark.slow
@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_postgresql_outage_mid_run_loses_and_duplicates_nothing(
    app: Pynenc, tasks: ModuleType, runners: Runners, tag: str, outage: str
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip(f"restarts the PostgreSQL server; this run uses {connection.vendor}")
    version, cluster = local_cluster()

    runner = runners.start(processes=2)
    invocations = [tasks.sleep_task(0.5, f"{tag}-{i}") for i in range(TASKS)]
    ids = [inv.invocation_id for inv in invocations]

    def done() -> int:
        return sum(status == SUCCESS for status in statuses(app, ids).values())

    wait_until(lambda: done() >= 4, 60, runners.diag)
    finished_before = done()
    restarted_at = time.monotonic()
    for command in OUTAGES[outage]:
        subprocess.run(["pg_ctlcluster", version, cluster, *command], check=True, timeout=120)
    print(f"pg_ctlcluster {outage} took {time.monotonic() - restarted_at:.1f}s")
    wait_for_database()
    assert finished_before < TASKS, "all tasks ended before the restart; the test proved nothing"

    wait_all_success(app, ids, 180, runners.diag)
    assert_success_exactly_once(app, ids, runners.diag())
    assert [inv.result for inv in invocations] == [f"{tag}-{i}" for i in range(TASKS)]
    assert not runner.exited(), runner.tail()
