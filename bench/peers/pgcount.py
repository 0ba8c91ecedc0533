"""Count the statements a process sends through psycopg 3 (for procrastinate, which has no ORM).

:func:`install` patches ``execute``/``executemany`` of ``psycopg.Cursor`` and
``psycopg.AsyncCursor`` (``Connection.execute`` goes through them), so every statement a
process sends is counted once, whichever connection or pool it uses. The empty query
``psycopg_pool`` sends to check a connection when it is taken from the pool is counted
apart (``pings``), not as a statement. With a directory (the worker processes: the
``PYNENC_BENCH_COUNT_DIR`` variable), a daemon thread rewrites ``<dir>/<pid>.json``
every 0.2 s with the cumulative counts, in the format ``bench.benchapp.counting`` uses
(``t``, ``pid``; the total is under ``statements_total``).

PL/pgSQL functions (procrastinate's ``procrastinate_fetch_job_v2`` etc.) run several
statements inside the server for one call: those count as one, as the client sends one.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
from collections import Counter
from functools import wraps
from pathlib import Path
from typing import Any

DUMP_EVERY_SEC = 0.2

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_installed = False
_enabled = True


def _kind(query: Any) -> str:
    text = query.as_string(None) if hasattr(query, "as_string") else str(query)
    text = text.strip()
    if not text:
        return "ping"
    return " ".join(text.split())[:80]


def _wrap_sync(method: Any) -> Any:
    @wraps(method)
    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if _enabled:
            key = _kind(query)
            with _lock:
                _counts[key] += 1
        return method(self, query, *args, **kwargs)

    return counted


def _wrap_async(method: Any) -> Any:
    @wraps(method)
    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if _enabled:
            key = _kind(query)
            with _lock:
                _counts[key] += 1
        return await method(self, query, *args, **kwargs)

    return counted


def set_enabled(enabled: bool) -> None:
    """Pause/resume counting (a client counts only the phases it measures)."""
    global _enabled
    _enabled = enabled


def totals() -> tuple[int, int]:
    """(statements, pings) counted so far in this process."""
    with _lock:
        pings = _counts.get("ping", 0)
        return sum(_counts.values()) - pings, pings


def by_statement() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def _dump(directory: Path) -> None:
    statements, pings = totals()
    payload = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "t": time.time(),
        "statements_total": statements,
        "pings_total": pings,
        "statements": by_statement(),
    }
    tmp = directory / f".{os.getpid()}.json.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, directory / f"{os.getpid()}.json")


def _writer(directory: Path) -> None:
    while True:
        with contextlib.suppress(OSError):
            _dump(directory)
        time.sleep(DUMP_EVERY_SEC)


def install(directory: Path | None = None) -> None:
    """Count from now on; with ``directory``, also dump the counts there periodically."""
    global _installed
    if _installed:
        return
    _installed = True
    import psycopg

    # Subclasses (client-side, raw cursors) inherit these methods: patch the bases only.
    psycopg.Cursor.execute = _wrap_sync(psycopg.Cursor.execute)  # type: ignore[method-assign]
    psycopg.Cursor.executemany = _wrap_sync(psycopg.Cursor.executemany)  # type: ignore[method-assign]
    psycopg.AsyncCursor.execute = _wrap_async(psycopg.AsyncCursor.execute)  # type: ignore[method-assign]
    psycopg.AsyncCursor.executemany = _wrap_async(psycopg.AsyncCursor.executemany)  # type: ignore[method-assign]
    if directory is not None:
        threading.Thread(target=_writer, args=(directory,), name="pgcount", daemon=True).start()
        atexit.register(lambda: _dump(directory))
