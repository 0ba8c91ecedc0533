"""The procrastinate app of the peer benchmark: the worker CLI loads it by dotted path.

``procrastinate --app=bench.peers.procrastinate_app.app worker`` in each worker process,
and the benchmark's client imports it too (both read the bench database's URL from
``BENCH_PROCRASTINATE_DSN``). The connector is procrastinate's default, ``PsycopgConnector``
(an async psycopg 3 pool); a client that opens the app synchronously gets procrastinate's
sync connector. With ``BENCH_WIRE_COUNT_DIR`` set (the counting phase only), the process
counts the statements it sends (``bench/wirecount.py``).
"""

from __future__ import annotations

import os

import procrastinate

from bench import wirecount

wirecount.install_from_env()

DSN_ENV = "BENCH_PROCRASTINATE_DSN"

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ[DSN_ENV]))


@app.task(name="bench_noop")
def noop(i: int) -> int:
    """Trivial and synchronous, like every system's task (procrastinate runs a sync task
    in a thread of its worker)."""
    return i
