"""The throughput benchmark's task on pynenc 0.4's own SQLite backend (the reference).

pynenc runs a task by importing its module in the worker, so the task and its app live
at module level here, and the client (``bench/throughput.py``) and the runner
(``bench/pynenc_sqlite_reference.py --tasks-module bench.tp_reference_tasks``) build the
same app from the same environment: ``BENCH_TP_REFERENCE_DB`` (the SQLite file) and
``BENCH_TP_REFERENCE_PROCESSES`` (the runner's workers). Spawned workers inherit both.
Logging is at WARNING, like the pynenc-django side, so no INFO line per task is written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pynenc import Pynenc, PynencBuilder

APP_ID = "pynenc-django-bench-reference"
DB_ENV = "BENCH_TP_REFERENCE_DB"
PROCESSES_ENV = "BENCH_TP_REFERENCE_PROCESSES"


def build_app(db_path: str, processes: int, log_level: str = "warning") -> Pynenc:
    """pynenc's built-in SQLite components with its PersistentProcessRunner."""
    return (
        PynencBuilder()
        .app_id(APP_ID)
        .sqlite(db_path)
        .persistent_process_runner(num_processes=processes)
        .logging_level(log_level)
        .build()
    )


app = build_app(
    os.environ.get(DB_ENV) or str(Path(tempfile.gettempdir()) / "pynenc_tp_reference.sqlite3"),
    int(os.environ.get(PROCESSES_ENV) or 2),
)


@app.task
def noop(i: int = 0) -> int:
    """The same trivial task as ``bench.benchapp.tasks.noop``."""
    return i
