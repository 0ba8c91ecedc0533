"""Count the SQL statements a process executes; dump the counts to a file per process.

Enabled only when ``PYNENC_BENCH_COUNT_DIR`` is set (the benchmark sets it for the runner
under test, never for its own client process). Every 0.2 s a daemon thread rewrites
``$PYNENC_BENCH_COUNT_DIR/<pid>.json`` with the cumulative counts, so the benchmark can
take a snapshot at the start and at the end of a window and subtract.

Two counters:

* ``django``: every ``cursor.execute``/``executemany`` that goes through a Django
  connection, counted by a wrapper appended to ``connection.execute_wrappers`` when the
  connection is created (``connection_created`` signal). ``executemany`` counts once.
  Transaction control done by the driver (Django's ``atomic`` turns autocommit off and
  calls ``connection.commit()``) is not a statement here; savepoints and the explicit
  ``BEGIN IMMEDIATE`` of pynenc-django's SQLite write transactions are.
  Connections that do not go through Django are not seen: pynenc-django's PostgreSQL
  ``LISTEN`` connection (``pynenc_django.wakeup``) is a raw psycopg connection. It sends
  nothing while a worker waits for a notification; its traffic is the one ``LISTEN``
  at start.
* ``engine`` (SQLite only): every statement the SQLite library itself runs, from
  ``sqlite3.Connection.set_trace_callback``, including the implicit ``BEGIN``/``COMMIT``
  and PRAGMAs. This is the counter used for pynenc's own SQLite backend, which does not
  use Django (:func:`install_sqlite_tracing`).

The Django counter also keeps the last few hundred statements with their start time and
duration (``recent``), from which the benchmark draws the timeline of one call.
Statement texts are normalised (literals and ``IN`` lists folded, savepoint names
replaced by ``<id>``) and cut to 160 characters, so equal statements group.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import multiprocessing
import os
import re
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

COUNT_DIR_ENV = "PYNENC_BENCH_COUNT_DIR"
DUMP_EVERY_SEC = 0.2
MAX_SQL_CHARS = 160
RECENT = 400  # the last statements, with their start time and duration, for timelines

_lock = threading.Lock()
_django: Counter[str] = Counter()
_engine: Counter[str] = Counter()
_recent: deque[tuple[float, float, str]] = deque(maxlen=RECENT)
_started = False

_WS = re.compile(r"\s+")
_PLACEHOLDER_RUN = re.compile(r"%s(?:\s*,\s*%s)+")
_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_QMARK_RUN = re.compile(r"\?(?:\s*,\s*\?)+")
# Django names savepoints s<thread id>_x<n>: one name per savepoint, fold them.
_SAVEPOINT_ID = re.compile(r'"?s\d+_x\d+"?')


def normalize_django_sql(sql: str) -> str:
    """Django passes the template (``%s`` placeholders); fold ``IN (%s, %s, ...)`` lists."""
    text = _PLACEHOLDER_RUN.sub("%s, ...", _WS.sub(" ", str(sql)).strip())
    text = _SAVEPOINT_ID.sub("<id>", text)
    return text[:MAX_SQL_CHARS]


def normalize_engine_sql(sql: str) -> str:
    """SQLite traces expanded statements: replace literals so equal statements group."""
    text = _SAVEPOINT_ID.sub("<id>", _WS.sub(" ", sql).strip())
    text = _QMARK_RUN.sub("?, ...", _NUMBER.sub("?", _STRING.sub("?", text)))
    return text[:MAX_SQL_CHARS]


def _role() -> str:
    return "parent" if multiprocessing.parent_process() is None else "child"


def _dump(directory: Path) -> None:
    with _lock:
        django = dict(_django)
        engine = dict(_engine)
        recent = list(_recent)
    payload: dict[str, Any] = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "role": _role(),
        "name": multiprocessing.current_process().name,
        "t": time.time(),
        "django_total": sum(django.values()),
        "engine_total": sum(engine.values()),
        "django": django,
        "engine": engine,
        "recent": recent,
    }
    target = directory / f"{os.getpid()}.json"
    tmp = directory / f".{os.getpid()}.json.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, target)


def _writer(directory: Path) -> None:
    while True:
        with contextlib.suppress(OSError):
            _dump(directory)
        time.sleep(DUMP_EVERY_SEC)


def _final_dump(directory: Path) -> None:
    with contextlib.suppress(OSError):
        _dump(directory)


def _start_writer() -> Path | None:
    global _started
    value = os.environ.get(COUNT_DIR_ENV)
    if not value:
        return None
    directory = Path(value)
    if not _started:
        _started = True
        threading.Thread(
            target=_writer, args=(directory,), name="bench-sql-counter", daemon=True
        ).start()
        atexit.register(_final_dump, directory)
    return directory


def _count_django(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    key = normalize_django_sql(sql)
    started = time.time()
    try:
        return execute(sql, params, many, context)
    finally:
        with _lock:
            _django[key] += 1
            _recent.append((started, time.time() - started, key))


def _trace_engine(statement: str) -> None:
    key = normalize_engine_sql(statement)
    with _lock:
        _engine[key] += 1


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    # The wrapper list belongs to the DatabaseWrapper and survives reconnects.
    if _count_django not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_django)
    if connection.vendor == "sqlite":
        connection.connection.set_trace_callback(_trace_engine)


def install_django_counting() -> None:
    """Count statements of every Django connection of this process (from ``ready()``)."""
    if _start_writer() is None:
        return
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, weak=False, dispatch_uid="bench-sql-counter")


def install_sqlite_tracing() -> None:
    """Count statements of every ``sqlite3`` connection opened by this process from now on.

    For pynenc's own SQLite backend, which calls ``sqlite3.connect`` for its connections.
    """
    if _start_writer() is None:
        return
    import sqlite3

    if getattr(sqlite3.connect, "_bench_traced", False):
        return
    original = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = original(*args, **kwargs)
        conn.set_trace_callback(_trace_engine)
        return conn

    traced_connect._bench_traced = True  # type: ignore[attr-defined]
    sqlite3.connect = traced_connect  # type: ignore[assignment]
