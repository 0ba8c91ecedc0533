"""pynenc 0.4's own PersistentProcessRunner on its built-in SQLite backend, left idle.

The reference row of ``runner_idle_wake.py``::

    PYNENC_BENCH_COUNT_DIR=/tmp/x python bench/pynenc_sqlite_reference.py DB_PATH [PROCESSES]

pynenc spawns its workers (start method ``spawn``), and a spawned process imports this
file as ``__mp_main__`` before it unpickles its target, so the module-level
``install_sqlite_tracing()`` below patches ``sqlite3.connect`` in the parent, in every
worker and in pynenc's ``multiprocessing.Manager`` process (which opens no connection).
Each traced connection counts every statement SQLite runs
(``sqlite3.Connection.set_trace_callback``), see ``bench/benchapp/counting.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from bench.benchapp.counting import install_sqlite_tracing  # noqa: E402

install_sqlite_tracing()


def main() -> None:
    from pynenc import PynencBuilder

    db_path = sys.argv[1]
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    app = (
        PynencBuilder()
        .app_id("pynenc-django-bench-reference")
        .sqlite(db_path)
        .persistent_process_runner(num_processes=processes)
        .build()
    )
    app.runner.run()


if __name__ == "__main__":
    main()
