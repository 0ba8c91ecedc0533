"""Tasks of the connection tests (``tests/runner/test_task_connections.py``): what each
task's own code sees of its database connection."""

import os

from django.db import connection, transaction

from pynenc_django import app, enqueue_on_commit


def session_id() -> str:
    """The server's id of this connection's session (SQLite: the process's connection
    object, which a reconnect replaces)."""
    if connection.vendor == "postgresql":
        sql = "SELECT pg_backend_pid()"
    elif connection.vendor == "mysql":
        sql = "SELECT CONNECTION_ID()"
    else:
        connection.ensure_connection()
        return f"sqlite-{id(connection.connection)}"
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return str(cursor.fetchone()[0])


@app.task
def no_database(i: int) -> int:
    return os.getpid()


@app.task
def database_session(i: int) -> str:
    return f"{os.getpid()} {session_id()}"


@app.task
def child(tag: str) -> str:
    return tag


class Rollback(Exception):
    pass


@app.task
def submit_in_atomic(tag: str, commit: bool) -> list[str]:
    """Submits two children inside its own transaction (``.delay()``-style and
    ``enqueue_on_commit``), which commits or rolls back: returns their ids."""
    ids = []
    try:
        with transaction.atomic():
            ids.append(child(f"{tag}-direct").invocation_id)
            ids.append(enqueue_on_commit(child, f"{tag}-on-commit").invocation_id)
            if not commit:
                raise Rollback
    except Rollback:
        pass
    return ids


@app.task
def planner_setting(name: str) -> str:
    """A PostgreSQL planner setting as the task's own code sees it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return str(cursor.fetchone()[0])
