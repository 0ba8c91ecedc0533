"""The private database servers of ``tests/servers.py``, which restart tests use instead
of the machine's own server: a restart and a crash keep committed data, and nothing is
left behind (processes, directory), also when the test fails inside the block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from django.db import connection

from tests.servers import ServerUnavailable, private_mariadb, private_postgresql, unavailable


def _postgresql_query(server: Any, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(
        host=server.host, port=server.port, user=server.user, dbname="smoke", autocommit=True
    ) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def _mysql_query(server: Any, sql: str) -> list[tuple[Any, ...]]:
    import MySQLdb

    conn = MySQLdb.connect(host=server.host, port=server.port, user=server.user, database="smoke")
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        rows = list(cursor.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


SERVERS: dict[str, tuple[Callable[[], contextlib.AbstractContextManager[Any]], Any]] = {
    "postgresql": (private_postgresql, _postgresql_query),
    "mysql": (private_mariadb, _mysql_query),
}


def _server_process(server: Any) -> psutil.Process:
    """The server's main process (psutil tells it from a later one with the same pid)."""
    process = getattr(server, "_postmaster", None) or getattr(server, "_process", None)
    assert process is not None
    return process if isinstance(process, psutil.Process) else psutil.Process(process.pid)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Boom(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("vendor", sorted(SERVERS))
def test_private_server_restarts_crashes_and_leaves_nothing(vendor: str) -> None:
    if connection.vendor != vendor:
        pytest.skip(f"checks the private {vendor} server; this run uses {connection.vendor}")
    start, query = SERVERS[vendor]
    shared_port = int(connection.settings_dict.get("PORT") or 0)
    processes: list[psutil.Process] = []
    try:
        with pytest.raises(Boom), start() as server:
            base = server.base
            processes.append(_server_process(server))
            assert server.port != shared_port
            server.create_database("smoke")
            query(server, "CREATE TABLE t (i INT)")
            query(server, "INSERT INTO t VALUES (1)")
            server.crash()
            processes.append(_server_process(server))
            query(server, "INSERT INTO t VALUES (2)")
            server.restart()
            processes.append(_server_process(server))
            assert sorted(query(server, "SELECT i FROM t")) == [(1,), (2,)]
            assert _alive(processes[-1]) and not _alive(processes[0])
            raise Boom  # the cleanup must not depend on the test passing
    except ServerUnavailable as exc:
        unavailable(f"cannot start a private {vendor} server: {exc}")
    assert not os.path.exists(base)
    assert not [p for p in processes if _alive(p)]
