"""procrastinate on PostgreSQL, measured like pynenc-django (see ``bench/peers/common.py``).

    .venv/bin/python -m bench.peers.procrastinate_bench --runs 3 --tasks 2000 \
        --workers 1,2,4 --latency-calls 50 --out FILE.json [--quick]

"W workers" = W ``procrastinate worker --concurrency 1`` processes (the closest to W
worker processes of the other systems; procrastinate is async, so one process with
``--concurrency W`` would instead run W jobs on one event loop and one core). Workers run
with procrastinate's defaults: ``listen_notify`` on (idle workers wake on the ``NOTIFY``
that each inserted job sends), ``fetch_job_polling_interval`` 5 s as the fallback, log
level WARNING. The task is ``async def noop(i): return i``.

The client is this process, with procrastinate's sync API (``app.open()``): ``defer`` one
job per call, ``batch_defer`` for the batch (one call for all ``--tasks`` jobs; also the
submit of the throughput runs). procrastinate stores no return value: a result is
"readable" when the job's status is ``succeeded``. Throughput waits by counting succeeded
jobs every 10 ms; a round trip polls ``job_manager.get_job_status`` every 1 ms (there is
no blocking wait for a job).

Statements are counted at the psycopg level in the client and in one counting worker
(:mod:`bench.peers.pgcount`); the bench database ``pynenc_bench_procrastinate`` is
recreated at the start of each run and dropped at the end.
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

from bench.peers import common, pgcount

DB_NAME = "pynenc_bench_procrastinate"
THROUGHPUT_POLL_SEC = 0.01
LIFECYCLE_TASKS = 500


class ProcrastinateBench(common.PeerBench):
    system = "procrastinate"
    submit_description = (
        "sync App.open(); single: noop.defer(i=i) per task; batch and throughput: one "
        "noop.batch_defer(...) call with all tasks"
    )
    wait_description = (
        "throughput: SELECT count of status='succeeded' every 10 ms; round trip: "
        "job_manager.get_job_status(id) every 1 ms until 'succeeded' (no blocking wait)"
    )

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.admin_url: str = args.postgres_url
        self.url = common.with_database(self.admin_url, DB_NAME)
        self.server = ""
        self.app: Any = None
        self.noop: Any = None
        self.conn: Any = None  # raw psycopg connection: waits, counts, truncates
        self.notes += [
            "W workers = W `procrastinate worker --concurrency 1` processes (async peer; one "
            "process with --concurrency W would share one event loop and one core).",
            "procrastinate defaults: listen_notify on, fetch_job_polling_interval 5 s "
            "(fallback), delete_jobs never; log level WARNING. Task: async def noop(i) -> i.",
            "Client: procrastinate sync API in the harness process. Single submit = defer() "
            "per task; batch = one batch_defer() call with all --tasks jobs (also the "
            "throughput submit).",
            "procrastinate keeps no return value: 'readable' = status 'succeeded' in "
            "procrastinate_jobs. Throughput counts succeeded jobs every 10 ms; round trip "
            "polls get_job_status every 1 ms.",
            f"Database {DB_NAME} recreated (schema applied) at the start of each run, jobs "
            "truncated between phases, dropped at the end.",
        ]

    # --- store

    def connect(self) -> None:
        self.server = common.postgres_version(self.admin_url)

    def database(self) -> str:
        return self.server

    def label(self) -> str:
        return f"procrastinate {common.versions('procrastinate')['procrastinate']} on {self.server}"

    def versions(self) -> dict[str, str]:
        return common.versions("procrastinate", "psycopg", "psycopg-pool")

    def fresh_store(self) -> None:
        self.close()
        common.recreate_database(self.admin_url, DB_NAME)
        os.environ["BENCH_PROCRASTINATE_DSN"] = self.url
        pgcount.install()  # the client counts too, only during statements()
        pgcount.set_enabled(False)
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
        common.drop_database(self.admin_url, DB_NAME)

    # --- workers

    def start_workers(
        self, count: int, count_dir: Path | None = None
    ) -> list[subprocess.Popen[bytes]]:
        env = {"BENCH_PROCRASTINATE_DSN": self.url}
        if count_dir is not None:
            env[common.COUNT_DIR_ENV] = str(count_dir)
        procs = []
        for i in range(count):
            cmd = [
                common.PYTHON,
                "-m",
                "procrastinate",
                "--app=bench.peers.procrastinate_app.app",
                "--log-level=warning",
                "worker",
                "--concurrency=1",
                f"--name=bench-{i}",
            ]
            procs.append(
                common.start_process(cmd, common.child_env(env), self.log_path(f"worker{i}"))
            )
        # Ready = registered and LISTENing (the LISTEN is the last thing a worker does
        # before it waits for jobs).
        common.wait_until(
            lambda: self._listening() >= count,
            f"{count} procrastinate workers to LISTEN",
            timeout=common.READY_TIMEOUT_SEC,
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

    def submit_single(self, n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            self.noop.defer(i=i)
        return time.perf_counter() - started

    def submit_batch(self, n: int) -> float:
        started = time.perf_counter()
        self.noop.batch_defer(*({"i": i} for i in range(n)))
        return time.perf_counter() - started

    def _done(self) -> int:
        succeeded, failed = self.conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), "
            "count(*) FILTER (WHERE status IN ('failed', 'aborted', 'cancelled')) "
            "FROM procrastinate_jobs"
        ).fetchone()
        if failed:
            raise RuntimeError(f"{failed} procrastinate jobs failed")
        return int(succeeded)

    def throughput(self, n: int) -> float:
        started = time.perf_counter()
        self.noop.batch_defer(*({"i": i} for i in range(n)))
        deadline = time.monotonic() + max(120.0, n / 5)
        while self._done() < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"procrastinate: only {self._done()}/{n} jobs done in time")
            time.sleep(THROUGHPUT_POLL_SEC)
        return time.perf_counter() - started

    def round_trip(self, i: int) -> float:
        from procrastinate.jobs import Status

        manager = self.app.job_manager
        started = time.perf_counter()
        job_id = self.noop.defer(i=i)
        deadline = time.monotonic() + 30
        while (status := manager.get_job_status(job_id)) != Status.SUCCEEDED:
            if status in (Status.FAILED, Status.ABORTED, Status.CANCELLED):
                raise RuntimeError(f"procrastinate job {job_id} ended {status}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"procrastinate job {job_id} not done in 30 s ({status})")
            time.sleep(common.POLL_SEC)
        return time.perf_counter() - started

    # --- statements

    def statements(self) -> tuple[float | None, float | None]:
        """Idle statements/s of one worker, then statements per job with that worker."""
        from procrastinate.jobs import Status

        count_dir = self.work / f"counts-{time.time_ns()}"
        count_dir.mkdir()
        procs = self.start_workers(1, count_dir)
        pgcount.set_enabled(True)
        try:
            time.sleep(common.SETTLE_SEC)
            start = common.fresh_counts(count_dir, "statements_total", time.time(), 1)
            time.sleep(self.args.idle_seconds)
            end = common.fresh_counts(count_dir, "statements_total", time.time(), 1)
            window = max(t for t, _ in end.values()) - max(t for t, _ in start.values())
            idle = common.count_delta(start, end) / window

            k = min(self.args.tasks, LIFECYCLE_TASKS)
            worker_before = common.fresh_counts(count_dir, "statements_total", time.time(), 1)
            pings_before = common.read_counts(count_dir, "pings_total")
            c0, p0 = pgcount.totals()
            ids = [self.noop.defer(i=i) for i in range(k)]
            c1, p1 = pgcount.totals()
            common.wait_until(lambda: self._done() >= k, "counted jobs", timeout=120, procs=procs)
            c2, p2 = pgcount.totals()
            for job_id in ids:  # the client reads each result once
                if self.app.job_manager.get_job_status(job_id) != Status.SUCCEEDED:
                    raise RuntimeError(f"procrastinate job {job_id} did not succeed")
            c3, p3 = pgcount.totals()
            worker_after = common.fresh_counts(count_dir, "statements_total", time.time(), 1)
            worker = common.count_delta(worker_before, worker_after)
            worker_pings = common.count_delta(
                pings_before, common.read_counts(count_dir, "pings_total")
            )
            client = (c1 - c0) + (c3 - c2)
            lifecycle = (client + worker) / k
            self.notes.append(
                f"Run {self.run}: statements per job ({k} jobs, 1 counting worker, psycopg-level count; "
                f"PL/pgSQL function calls count 1): client defer {(c1 - c0) / k:.2f} + worker "
                f"{worker / k:.2f} + client status read {(c3 - c2) / k:.2f}; plus "
                f"{((p1 - p0) + (p3 - p2)) / k:.2f} client + {worker_pings / k:.2f} worker "
                f"pool-check pings (empty query) per job, not counted. Worker count includes its background "
                f"statements during the window (idle rate {idle:.2f}/s)."
            )
            return lifecycle, idle
        finally:
            pgcount.set_enabled(False)
            common.stop_processes(procs)


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__ or "", argv, postgres=True)
    return common.main(ProcrastinateBench, args)


if __name__ == "__main__":
    sys.exit(main())
