"""procrastinate on PostgreSQL, measured by ``bench/harness.py``.

    .venv/bin/python -m bench.peers.procrastinate_bench [--run-index K] [--tasks 2000] \
        [--workers 2] [--latency-calls 50] [--out FILE.json] [--quick]

"W workers" = W ``procrastinate worker --concurrency 1`` processes (the closest to W
worker processes of the other systems; one process with ``--concurrency W`` would run W
jobs on one event loop, in one core). Workers run with procrastinate's defaults:
``listen_notify`` on (idle workers wake on the ``NOTIFY`` each inserted job sends),
``fetch_job_polling_interval`` 5 s as the fallback, log level WARNING. The task is
``def noop(i): return i``, synchronous like every system's.

The client is this process, with procrastinate's sync API (``app.open()``): ``defer`` one
job per call, ``batch_defer`` for a batch (one call for all N jobs). procrastinate stores no
return value: a job's result is its status, ``succeeded``. It has no blocking wait either, so
after submitting, the client polls: end to end, one query for the status of every job still
pending every 10 ms (finished ones read and dropped); a round trip, ``get_job_status`` of its
one job every 1 ms. In the counting phase the client reads each job's status once with
``job_manager.get_job_status``.

Statements: everything psycopg sends for the client and each worker
(``bench/wirecount.py``), in the counting phase only. The bench database
``pynenc_bench_procrastinate`` is recreated at the start of each run and dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness, wirecount

DB_NAME = "pynenc_bench_procrastinate"
FAILED = ("failed", "aborted", "cancelled")


class ProcrastinateBench(harness.Bench):
    system = "procrastinate"
    submit_description = (
        "sync App.open(); single: noop.defer(i=i) per task; batch: one noop.batch_defer(...) "
        "with all tasks"
    )
    wait_description = (
        "no result value, no blocking wait: end to end, the client polls the status of every "
        "pending job every 10 ms (one query); round trip, get_job_status(id) every 1 ms"
    )

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.admin_url: str = args.postgres_url
        self.url = harness.with_database(self.admin_url, DB_NAME)
        self.server_work_url = self.url
        self.server = ""
        self.app: Any = None
        self.noop: Any = None
        self.conn: Any = None  # raw psycopg connection: result polls, readiness, truncates
        self.notes += [
            "W workers = W `procrastinate worker --concurrency 1` processes (async peer; one "
            "process with --concurrency W would share one event loop and one core).",
            "procrastinate's defaults: listen_notify on, fetch_job_polling_interval 5 s "
            "(fallback), delete_jobs never; log level WARNING. Task: def noop(i) -> i (sync, "
            "run in a thread of the worker).",
            "procrastinate keeps no return value: a result is the job's status, 'succeeded'.",
            f"Database {DB_NAME} recreated (schema applied) at the start of each run, jobs "
            "truncated between phases, dropped at the end.",
        ]

    # --- store

    def connect(self) -> None:
        self.server = harness.postgres_version(self.admin_url)

    def database(self) -> str:
        return self.server

    def label(self) -> str:
        version = harness.versions("procrastinate")["procrastinate"]
        return f"procrastinate {version} on {self.server}"

    def versions(self) -> dict[str, str]:
        return harness.versions("procrastinate", "psycopg", "psycopg-pool")

    def fresh_store(self) -> None:
        self.close()
        harness.recreate_pg_database(self.admin_url, DB_NAME)
        os.environ["BENCH_PROCRASTINATE_DSN"] = self.url
        import psycopg

        from bench.peers import procrastinate_app

        self.app, self.noop = procrastinate_app.app, procrastinate_app.noop
        self.app.open()
        self.app.schema_manager.apply_schema()
        self.conn = psycopg.connect(self.url, autocommit=True)

    def clear_jobs(self) -> None:
        self.conn.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers "
            "RESTART IDENTITY CASCADE"
        )

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.app.close()

    def drop_store(self) -> None:
        harness.drop_pg_database(self.admin_url, DB_NAME)

    # --- workers

    def start_workers(
        self, count: int, count_dir: Path | None = None
    ) -> list[subprocess.Popen[bytes]]:
        env = {"BENCH_PROCRASTINATE_DSN": self.url}
        if count_dir is not None:
            env[wirecount.COUNT_DIR_ENV] = str(count_dir)
        procs = []
        for i in range(count):
            cmd = [
                harness.PYTHON,
                "-m",
                "procrastinate",
                "--app=bench.peers.procrastinate_app.app",
                "--log-level=warning",
                "worker",
                "--concurrency=1",
                f"--name=bench-{i}",
            ]
            procs.append(
                harness.start_process(cmd, harness.child_env(env), self.log_path(f"worker{i}"))
            )
        # Ready = LISTENing (the last thing a worker does before it waits for jobs).
        harness.wait_until(
            lambda: self._listening() >= count,
            f"{count} procrastinate workers to LISTEN",
            timeout=harness.READY_TIMEOUT_SEC,
            procs=procs,
            interval=0.1,
        )
        return procs

    def _listening(self) -> int:
        row = self.conn.execute(
            "SELECT count(DISTINCT pid) FROM pg_stat_activity "
            "WHERE datname = %s AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()",
            (DB_NAME,),
        ).fetchone()
        return int(row[0])

    # --- client

    def submit_single(self, n: int, start: int = 0) -> Any:
        return {self.noop.defer(i=i): i for i in range(start, start + n)}

    def submit_batch(self, n: int) -> Any:
        ids = self.noop.batch_defer(*({"i": i} for i in range(n)))
        return dict(zip(ids, range(n), strict=True))

    def _finished(self, ids: list[int]) -> list[tuple[Any, Any]]:
        rows = self.conn.execute(
            "SELECT id, status FROM procrastinate_jobs "
            "WHERE id = ANY(%s) AND status NOT IN ('todo', 'doing')",
            (ids,),
        ).fetchall()
        if failed := [r for r in rows if r[1] != "succeeded"]:
            raise RuntimeError(f"procrastinate: {len(failed)} jobs ended {failed[0][1]}")
        return [(job_id, None) for job_id, _ in rows]

    def read_results(self, handles: Any, n: int, batch: bool) -> None:
        self.poll_results(dict(handles), self._finished)

    def read_each(self, handles: Any, n: int, start: int = 0) -> None:
        from procrastinate.jobs import Status

        for job_id in handles:
            status = self.app.job_manager.get_job_status(job_id)
            if status != Status.SUCCEEDED:
                raise RuntimeError(f"procrastinate job {job_id}: {status}")

    def done_count(self, handles: Any) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s) "
            "AND status NOT IN ('todo', 'doing')",
            (list(handles),),
        ).fetchone()
        return int(row[0])

    def round_trip(self, i: int) -> None:
        from procrastinate.jobs import Status

        manager = self.app.job_manager
        job_id = self.noop.defer(i=i)
        deadline = time.monotonic() + 30
        while (status := manager.get_job_status(job_id)) != Status.SUCCEEDED:
            if status in (Status.FAILED, Status.ABORTED, Status.CANCELLED):
                raise RuntimeError(f"procrastinate job {job_id} ended {status}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"procrastinate job {job_id} not done in 30 s ({status})")
            time.sleep(harness.ROUND_TRIP_POLL_SEC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_options(parser)
    parser.add_argument(
        "--postgres-url",
        default=harness.DEFAULT_POSTGRES_URL,
        help="an administrative database; the bench database is created next to it",
    )
    args = parser.parse_args(argv)
    harness.finish_options(parser, args)
    return harness.main(ProcrastinateBench(args, harness.work_dir("procrastinate")))


if __name__ == "__main__":
    sys.exit(main())
