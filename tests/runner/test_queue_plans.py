"""A burst of work that reaches a queue whose statistics say "empty" is still claimed
through the queue's index (:attr:`pynenc_django.vendors.postgresql.PostgreSQL.own_connection_setup`).

A queue table is empty whenever the workers keep up, and that is when autovacuum (or the
claims' own ``VACUUM``) records its statistics. A claim planned from them reads every
row of the table and sorts them, instead of taking the index's first entry, and a
worker's prepared claim keeps that plan until the next ``VACUUM`` or ``ANALYZE`` of the
table: for every claim of the next burst (measured in the seeded benchmark: 0.7 ms per
claim with 1,500 messages queued instead of 0.2, the cost growing with the backlog).

Counted by PostgreSQL's own scan counters of the queue table, in real runner processes.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from django.db import connection
from pynenc import Pynenc

from tests.runner.conftest import Runners, wait_until

MESSAGES = "pynenc_broker_message"
WARM_UP = 10
BURST = 1000


@pytest.fixture(autouse=True)
def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's plans from table statistics")


def scans() -> tuple[int, int]:
    """(sequential scans, index scans) of the queue table, counted by the server."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = %s",
            [MESSAGES],
        )
        seq, idx = cursor.fetchone()
    return int(seq), int(idx)


@pytest.fixture
def connections_module(app: Pynenc) -> ModuleType:
    from tests.project.jobs import connections as module

    return module


def test_a_burst_after_the_queue_was_seen_empty_is_claimed_through_the_index(
    app: Pynenc, tasks: ModuleType, runners: Runners
) -> None:
    with connection.cursor() as cursor:
        # What autovacuum leaves on a queue the workers kept empty.
        cursor.execute(f"VACUUM ANALYZE {MESSAGES}")
        cursor.execute("SELECT pg_stat_reset_single_table_counters(%s::regclass)", [MESSAGES])
    runner = runners.start(processes=1)
    for i in range(WARM_UP):  # the worker's claim prepared, and planned, on the empty queue
        assert tasks.add(i, 1).result == i + 1

    group = tasks.add.parallelize([(i, 1) for i in range(BURST)])
    assert sorted(group.results) == [i + 1 for i in range(BURST)]
    runner.send(15)
    runner.wait_exit(timeout=30)

    # A backend sends its counters when idle (at most once a second) and when it exits:
    # wait until they show a scan per claim at least.
    claims = WARM_UP + BURST
    seq, idx = wait_until(
        lambda: (counted := scans()) and sum(counted) >= claims and counted,
        timeout=20,
        message=lambda: f"the queue's scan counters never reached {claims}: {scans()}",
        interval=0.5,
    )
    assert seq < claims // 20, (
        f"{seq} sequential scans of {MESSAGES} for {claims} claims ({idx} index scans): "
        "claims read the whole queue instead of its index's head"
    )


def test_task_code_keeps_the_servers_planner_settings(
    app: Pynenc, connections_module: ModuleType, runners: Runners
) -> None:
    """The setting is the worker's own connection's only: a task's queries are planned
    as anywhere else in the project."""
    runners.start(processes=1)
    assert connections_module.planner_setting("enable_seqscan").result == "on"


def test_behind_a_transaction_mode_pooler_the_worker_sets_nothing_on_its_session() -> None:
    """``PYNENC__DJANGO_PREPARED_STATEMENTS=false`` (a transaction-mode pooler): a session
    setting would stay on whichever server connection the pooler lends next, to anyone."""
    import threading

    from django.db import connections

    from pynenc_django.runner import task_connections

    seen: dict[bool, str] = {}

    def worker_thread(set_up: bool) -> None:  # as a worker's thread: its own connection
        task_connections.enable("default", set_up=set_up)
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SHOW enable_seqscan")
                seen[set_up] = cursor.fetchone()[0]
        finally:
            task_connections.disable()
            connections["default"].close()

    for set_up in (True, False):
        thread = threading.Thread(target=worker_thread, args=(set_up,))
        thread.start()
        thread.join()
    assert seen == {True: "off", False: "on"}
