"""Tell the benchmark that a worker process is up, at no cost once it is.

With ``BENCH_READY_DIR`` set, a process touches ``<dir>/<pid>.ready`` (its pid, parent pid
and name inside) right after its first database statement: in a worker that is its first
poll for work, so its loop runs. The hook then removes itself, so nothing of it is left in
the timed phases. Used by pynenc-django's runner (``bench/benchapp``), django-tasks-db's
``db_worker`` (``bench/peers/djtasks_app``) and pynenc's own runner
(``bench/pynenc_sqlite_reference.py``). procrastinate's and Celery's workers say so
otherwise (their ``LISTEN``; Celery's ``worker_ready`` signal).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

READY_DIR_ENV = "BENCH_READY_DIR"
_marked = False


def mark() -> None:
    """Touch this process's ready file (once)."""
    global _marked
    directory = os.environ.get(READY_DIR_ENV)
    if _marked or not directory:
        return
    _marked = True
    payload = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "name": multiprocessing.current_process().name,
    }
    tmp = Path(directory, f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, Path(directory, f"{os.getpid()}.ready"))


def read(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in directory.glob("*.ready"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def install_django() -> None:
    """Mark after the first statement of any Django connection, then unhook."""
    if not os.environ.get(READY_DIR_ENV):
        return
    from django.db import connections
    from django.db.backends.signals import connection_created

    def once(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        try:
            return execute(sql, params, many, context)
        finally:
            mark()
            connection_created.disconnect(dispatch_uid="bench-ready")
            for conn in connections.all(initialized_only=True):
                if once in conn.execute_wrappers:
                    conn.execute_wrappers.remove(once)

    def created(sender: Any, connection: Any, **kwargs: Any) -> None:
        if not _marked and once not in connection.execute_wrappers:
            connection.execute_wrappers.append(once)

    connection_created.connect(created, weak=False, dispatch_uid="bench-ready")


def install_sqlite() -> None:
    """Mark at the first ``sqlite3.connect`` (pynenc's SQLite backend), then unpatch."""
    if not os.environ.get(READY_DIR_ENV):
        return
    import sqlite3

    original = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        sqlite3.connect = original
        conn = original(*args, **kwargs)
        mark()
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]
