"""The procrastinate app of the peer benchmark: the worker CLI loads it by dotted path.

``procrastinate --app=bench.peers.procrastinate_app.app worker`` in each worker process,
and the benchmark's client imports it too (both read the bench database's URL from
``BENCH_PROCRASTINATE_DSN``). The connector is procrastinate's default, ``PsycopgConnector``
(an async psycopg 3 pool); a client that opens the app synchronously gets procrastinate's
sync connector. With ``PYNENC_BENCH_COUNT_DIR`` set, the process counts the statements
it sends (:mod:`bench.peers.pgcount`).
"""

from __future__ import annotations

import os
from pathlib import Path

import procrastinate

from bench.peers import pgcount

DSN_ENV = "BENCH_PROCRASTINATE_DSN"
COUNT_DIR_ENV = "PYNENC_BENCH_COUNT_DIR"

if _count_dir := os.environ.get(COUNT_DIR_ENV):
    pgcount.install(Path(_count_dir))

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ[DSN_ENV]))


@app.task(name="bench_noop")
async def noop(i: int) -> int:
    """Trivial, and async: procrastinate runs sync tasks in a thread, async ones on its loop."""
    return i
