"""django-tasks-db's ``db_worker`` on PostgreSQL, measured like pynenc-django (``common.py``).

    .venv/bin/python -m bench.peers.django_tasks_db_bench --runs 3 --tasks 2000 \
        --workers 1,2,4 --latency-calls 50 --out FILE.json [--quick]

"W workers" = W ``manage.py db_worker`` processes (each runs one task at a time; that is
how the command scales), with its defaults: ``--interval 1`` (an idle worker sleeps 1 s
between polls; ``--interval`` changes it), the random start-up delay, and Django's default
``CONN_MAX_AGE`` 0, so the worker reconnects on every loop (``--conn-max-age`` changes it).
``--verbosity 0``: no per-task INFO logs (the command has no WARNING setting; 0 means
CRITICAL). The project is ``bench.peers.djtasks_settings``; the task is ``noop(i) -> i``.

The client is this process: ``noop.enqueue(i)`` per task (the Tasks API has no bulk
enqueue, so there is no batch rate). Throughput waits by counting SUCCESSFUL rows every
10 ms; a round trip calls ``result.refresh()`` every 1 ms until the status is SUCCESSFUL
(there is no blocking wait for a result).

Statements are counted with Django's ``execute_wrapper`` in the client and, through the
bench app's ``ready()`` hook, in one counting ``db_worker`` (``bench.benchapp.counting``,
the counter of pynenc-django's own benchmark). The database ``pynenc_bench_djtasks`` is
recreated and migrated at the start of each run and dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.peers import common

DB_NAME = "pynenc_bench_djtasks"
SETTINGS = "bench.peers.djtasks_settings"
THROUGHPUT_POLL_SEC = 0.01
LIFECYCLE_TASKS = 500


class StatementCounter:
    """A Django ``execute_wrapper`` for the client: counts while ``on``."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)

    @contextlib.contextmanager
    def on(self) -> Iterator[StatementCounter]:
        from django.db import connection

        with connection.execute_wrapper(self):
            yield self


class DjangoTasksDbBench(common.PeerBench):
    system = "django-tasks-db"
    submit_description = "noop.enqueue(i) per task (no bulk enqueue in the Tasks API)"
    wait_description = (
        "throughput: count of status SUCCESSFUL every 10 ms; round trip: result.refresh() "
        "every 1 ms until SUCCESSFUL (no blocking wait)"
    )

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.admin_url: str = args.postgres_url
        self.url = common.with_database(self.admin_url, DB_NAME)
        self.server = ""
        self.noop: Any = None
        self.model: Any = None
        self.notes += [
            "W workers = W `manage.py db_worker` processes (one task at a time each).",
            f"db_worker defaults: --interval {args.interval:g} s"
            + (" (the default)" if args.interval == 1.0 else " (NOT the default 1 s)")
            + ": an idle worker sleeps that long between polls, which sets the round trip; "
            "random start-up delay on; --verbosity 0 (no per-task INFO logs; the command "
            "has no WARNING level).",
            f"CONN_MAX_AGE {args.conn_max_age}"
            + (
                " (Django's default): db_worker closes its connection on every loop, so each "
                "task and each idle poll opens a new PostgreSQL connection."
                if args.conn_max_age == 0
                else " (NOT Django's default 0)."
            ),
            "Round trip with a polling worker: a call waits for the next poll of either "
            "worker. The worker that ran the previous call polls once more and sleeps "
            "--interval, and the next call comes after a 0.05-0.2 s gap, so when the two "
            "workers poll in phase (two db_workers started together usually do: their "
            "first polls land within ~0.1-0.4 s here, despite the random start-up delay) "
            "the round trip is close to interval - gap (~0.8-0.95 s at 1 s); with phases "
            "half an interval apart it is ~interval/2 - gap.",
            "Client: Tasks API in the harness process, noop.enqueue(i) per task (no bulk "
            "enqueue: submit_batch_per_s is null). Throughput counts SUCCESSFUL rows every "
            "10 ms; round trip polls result.refresh() every 1 ms.",
            f"Database {DB_NAME} recreated and migrated at the start of each run, task results "
            "deleted between phases, dropped at the end.",
        ]

    # --- store

    def connect(self) -> None:
        self.server = common.postgres_version(self.admin_url)
        os.environ["BENCH_DJTASKS_DATABASE_URL"] = self.url
        os.environ["BENCH_DJTASKS_CONN_MAX_AGE"] = str(self.args.conn_max_age)
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
        import django

        django.setup()
        from django_tasks_db.models import DBTaskResult

        from bench.peers.djtasks_app.tasks import noop

        self.noop, self.model = noop, DBTaskResult

    def database(self) -> str:
        return self.server

    def label(self) -> str:
        version = common.versions("django-tasks-db")["django-tasks-db"]
        return f"django-tasks-db {version} db_worker on {self.server}"

    def versions(self) -> dict[str, str]:
        return common.versions("django-tasks-db", "django", "psycopg")

    def fresh_store(self) -> None:
        from django.core.management import call_command

        self.close()
        common.recreate_database(self.admin_url, DB_NAME)
        call_command("migrate", verbosity=0, interactive=False)

    def clear_jobs(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {self.model._meta.db_table}")

    def close(self) -> None:
        from django.db import connections

        connections.close_all()

    def drop_store(self) -> None:
        common.drop_database(self.admin_url, DB_NAME)

    # --- workers

    def start_workers(
        self, count: int, count_dir: Path | None = None
    ) -> list[subprocess.Popen[bytes]]:
        ready_dir = self.work / f"ready-{time.time_ns()}"
        ready_dir.mkdir()
        env = {
            "BENCH_DJTASKS_DATABASE_URL": self.url,
            "BENCH_DJTASKS_CONN_MAX_AGE": str(self.args.conn_max_age),
            common.READY_DIR_ENV: str(ready_dir),
        }
        if count_dir is not None:
            env[common.COUNT_DIR_ENV] = str(count_dir)
        procs = []
        for i in range(count):
            cmd = [
                common.PYTHON,
                "-m",
                "django",
                "db_worker",
                f"--settings={SETTINGS}",
                "--verbosity=0",
                "--no-reload",
                f"--interval={self.args.interval}",
                f"--worker-id=bench-{count}-{i}-{time.time_ns() % 10**9}",
            ]
            procs.append(
                common.start_process(cmd, common.child_env(env), self.log_path(f"worker{i}"))
            )
        common.wait_until(
            lambda: common.ready_files(ready_dir) >= count,
            f"{count} db_workers to poll",
            timeout=common.READY_TIMEOUT_SEC,
            procs=procs,
            interval=0.1,
        )
        return procs

    # --- client

    def submit_single(self, n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            self.noop.enqueue(i)
        return time.perf_counter() - started

    def _done(self) -> int:
        from django.db.models import Count, Q
        from django.tasks import TaskResultStatus

        counts = self.model.objects.aggregate(
            ok=Count("id", filter=Q(status=TaskResultStatus.SUCCESSFUL)),
            failed=Count("id", filter=Q(status=TaskResultStatus.FAILED)),
        )
        if counts["failed"]:
            raise RuntimeError(f"{counts['failed']} django-tasks-db tasks failed")
        return int(counts["ok"])

    def throughput(self, n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            self.noop.enqueue(i)
        deadline = time.monotonic() + max(120.0, n / 2)
        while self._done() < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"django-tasks-db: only {self._done()}/{n} done in time")
            time.sleep(THROUGHPUT_POLL_SEC)
        return time.perf_counter() - started

    def round_trip(self, i: int) -> float:
        from django.tasks import TaskResultStatus

        started = time.perf_counter()
        result = self.noop.enqueue(i)
        deadline = time.monotonic() + 30
        while True:
            result.refresh()
            if result.status == TaskResultStatus.SUCCESSFUL:
                break
            if result.status == TaskResultStatus.FAILED or time.monotonic() > deadline:
                raise RuntimeError(f"django-tasks-db task {result.id}: {result.status}")
            time.sleep(common.POLL_SEC)
        return time.perf_counter() - started

    # --- statements

    def statements(self) -> tuple[float | None, float | None]:
        """Idle statements/s of one worker, then statements per task with that worker."""
        from django.tasks import TaskResultStatus

        count_dir = self.work / f"counts-{time.time_ns()}"
        count_dir.mkdir()
        key = "django_total"
        procs = self.start_workers(1, count_dir)
        try:
            time.sleep(common.SETTLE_SEC)
            start = common.fresh_counts(count_dir, key, time.time(), 1)
            time.sleep(self.args.idle_seconds)
            end = common.fresh_counts(count_dir, key, time.time(), 1)
            window = max(t for t, _ in end.values()) - max(t for t, _ in start.values())
            idle = common.count_delta(start, end) / window

            k = min(self.args.tasks, LIFECYCLE_TASKS)
            worker_before = common.fresh_counts(count_dir, key, time.time(), 1)
            with StatementCounter().on() as enqueue:
                results = [self.noop.enqueue(i) for i in range(k)]
            common.wait_until(lambda: self._done() >= k, "counted tasks", timeout=300, procs=procs)
            with StatementCounter().on() as read:
                for result in results:  # the client reads each result once
                    result.refresh()
                    if result.status != TaskResultStatus.SUCCESSFUL:
                        raise RuntimeError(f"django-tasks-db task {result.id}: {result.status}")
            worker_after = common.fresh_counts(count_dir, key, time.time(), 1)
            worker = common.count_delta(worker_before, worker_after)
            self.notes.append(
                f"Run {self.run}: statements per task ({k} tasks, 1 counting db_worker, Django "
                f"execute_wrapper; driver BEGIN/COMMIT of atomic() not counted): client "
                f"enqueue {enqueue.count / k:.2f} + worker {worker / k:.2f} + client "
                f"refresh {read.count / k:.2f}. The worker count includes the few idle polls "
                f"at the window's edges (idle rate {idle:.2f}/s)."
            )
            return (enqueue.count + worker + read.count) / k, idle
        finally:
            common.stop_processes(procs)


def _extra_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=float, default=1.0, help="db_worker --interval (its default: 1)"
    )
    parser.add_argument(
        "--conn-max-age", type=int, default=0, help="CONN_MAX_AGE of the workers (default 0)"
    )


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__ or "", argv, postgres=True, extra=_extra_options)
    return common.main(DjangoTasksDbBench, args)


if __name__ == "__main__":
    sys.exit(main())
