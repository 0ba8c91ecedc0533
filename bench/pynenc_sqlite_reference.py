"""pynenc 0.4's own PersistentProcessRunner on its built-in SQLite backend.

The reference row of ``runner_idle_wake.py`` (left idle) and of ``throughput.py``::

    PYNENC_BENCH_COUNT_DIR=/tmp/x python bench/pynenc_sqlite_reference.py DB_PATH [PROCESSES]
    python bench/pynenc_sqlite_reference.py DB_PATH PROCESSES --tasks-module bench.tp_reference_tasks

Without ``--tasks-module`` it builds an app with no tasks. With it, it runs that module's
``app`` (which must use ``DB_PATH`` and ``PROCESSES``: they are exported as
``BENCH_TP_REFERENCE_DB`` / ``BENCH_TP_REFERENCE_PROCESSES`` before the import), so the
workers run the tasks a client of the same module submits.

pynenc spawns its workers (start method ``spawn``), and a spawned process imports this
file as ``__mp_main__`` before it unpickles its target, so the module-level
``install_sqlite_tracing()`` below patches ``sqlite3.connect`` in the parent, in every
worker and in pynenc's ``multiprocessing.Manager`` process (which opens no connection).
Each traced connection counts every statement SQLite runs
(``sqlite3.Connection.set_trace_callback``), see ``bench/benchapp/counting.py`` and, for
``make bench``, ``bench/wirecount.py``; ``bench/ready.py`` marks each process ready at its
first connection.
"""

import argparse
import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from bench import ready, wirecount  # noqa: E402
from bench.benchapp.counting import install_sqlite_tracing  # noqa: E402

# Each a no-op unless its variable is set: PYNENC_BENCH_COUNT_DIR (runner_idle_wake.py),
# BENCH_WIRE_COUNT_DIR (make bench's counting phase), BENCH_READY_DIR (its readiness; after
# wirecount, whose sqlite3.connect it wraps and puts back).
install_sqlite_tracing()
wirecount.install_from_env()
ready.install_sqlite()


def main() -> None:
    parser = argparse.ArgumentParser(description="pynenc's PersistentProcessRunner on SQLite")
    parser.add_argument("db_path")
    parser.add_argument("processes", nargs="?", type=int, default=2)
    parser.add_argument("--tasks-module", help="run this module's `app` (e.g. with its tasks)")
    args = parser.parse_args()
    if args.tasks_module:
        os.environ["BENCH_TP_REFERENCE_DB"] = args.db_path
        os.environ["BENCH_TP_REFERENCE_PROCESSES"] = str(args.processes)
        app = importlib.import_module(args.tasks_module).app
    else:
        from pynenc import PynencBuilder

        app = (
            PynencBuilder()
            .app_id("pynenc-django-bench-reference")
            .sqlite(args.db_path)
            .persistent_process_runner(num_processes=args.processes)
            .build()
        )
    app.runner.run()


if __name__ == "__main__":
    main()
