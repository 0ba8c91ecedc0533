"""django-tasks-db's ``db_worker`` on PostgreSQL, measured by ``bench/harness.py``.

    .venv/bin/python -m bench.peers.django_tasks_db_bench [--tuned] [--run-index K] \
        [--tasks 2000] [--workers 2] [--latency-calls 50] [--out FILE.json] [--quick]

"W workers" = W ``manage.py db_worker`` processes (each runs one task at a time; that is
how the command scales), with its defaults: ``--interval 1`` (an idle worker sleeps 1 s
between polls), the random start-up delay. Django's defaults, ``CONN_MAX_AGE`` 0 (the worker
reconnects on every loop), make the ``django-tasks-db`` row; ``--tuned`` makes the
``django-tasks-db-tuned`` row, ``CONN_MAX_AGE`` 60 and ``CONN_HEALTH_CHECKS`` on, in the
client and the workers. ``--verbosity 0``: no per-task INFO logs (the command has no WARNING
setting; 0 means CRITICAL). The project is ``bench.peers.djtasks_settings``; the task is
``def noop(i) -> i``.

The client is this process: ``noop.enqueue(i)`` per task (the Tasks API has no bulk
enqueue, so there is no batch row). There is no blocking wait for a result either: end to
end, the client polls the result rows (status and return value) of every task still
pending, one query every 10 ms; a round trip calls ``result.refresh()`` every 1 ms. In the
counting phase it reads each result once with ``result.refresh()``.

Statements: everything psycopg sends for the client and each worker
(``bench/wirecount.py``, from the bench app's ``ready()``), in the counting phase only. The
database ``pynenc_bench_djtasks`` is recreated and migrated at the start of each run and
dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness, ready, wirecount

DB_NAME = "pynenc_bench_djtasks"
SETTINGS = "bench.peers.djtasks_settings"
TUNED_CONN_MAX_AGE = 60


class DjangoTasksDbBench(harness.Bench):
    system = "django-tasks-db"
    has_batch = False
    submit_description = "noop.enqueue(i) per task (no bulk enqueue in the Tasks API)"
    wait_description = (
        "no blocking wait: end to end, the client polls the result rows of every pending task "
        "every 10 ms (one query); round trip, result.refresh() every 1 ms"
    )

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        if args.tuned:
            self.system = "django-tasks-db-tuned"
        self.conn_max_age = TUNED_CONN_MAX_AGE if args.tuned else 0
        self.health_checks = bool(args.tuned)
        self.admin_url: str = args.postgres_url
        self.url = harness.with_database(self.admin_url, DB_NAME)
        self.server = ""
        self.noop: Any = None
        self.model: Any = None
        self.notes += [
            "W workers = W `manage.py db_worker` processes (one task at a time each).",
            f"db_worker defaults: --interval {args.interval:g} s"
            + (" (the default)" if args.interval == 1.0 else " (NOT the default 1 s)")
            + ": an idle worker sleeps that long between polls, which sets the round trip; "
            "random start-up delay on; --verbosity 0 (no per-task INFO logs).",
            (
                f"Tuned: CONN_MAX_AGE {self.conn_max_age}, CONN_HEALTH_CHECKS True (client and "
                "workers)."
                if args.tuned
                else "Django's defaults: CONN_MAX_AGE 0 (db_worker closes its connection on "
                "every loop, so each task and each idle poll opens a new connection), "
                "CONN_HEALTH_CHECKS False."
            ),
            "Round trip with a polling worker: a call waits for the next poll of either "
            "worker, so it is set by --interval and by the phase of the two workers' polls "
            "(started together, they often poll in step).",
            f"Database {DB_NAME} recreated and migrated at the start of each run, task results "
            "deleted between phases, dropped at the end.",
        ]

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "conn_max_age": self.conn_max_age,
            "conn_health_checks": self.health_checks,
        }

    def _env(self) -> dict[str, str]:
        return {
            "BENCH_DJTASKS_DATABASE_URL": self.url,
            "BENCH_DJTASKS_CONN_MAX_AGE": str(self.conn_max_age),
            "BENCH_DJTASKS_HEALTH_CHECKS": "1" if self.health_checks else "",
        }

    # --- store

    def connect(self) -> None:
        self.server = harness.postgres_version(self.admin_url)
        os.environ.update(self._env())
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
        import django

        django.setup()
        from django_tasks_db.models import DBTaskResult

        from bench.peers.djtasks_app.tasks import noop

        self.noop, self.model = noop, DBTaskResult

    def database(self) -> str:
        return self.server

    def label(self) -> str:
        version = harness.versions("django-tasks-db")["django-tasks-db"]
        tuned = ", CONN_MAX_AGE 60 + health checks" if self.health_checks else ""
        return f"django-tasks-db {version} db_worker on {self.server}{tuned}"

    def versions(self) -> dict[str, str]:
        return harness.versions("django-tasks-db", "django", "psycopg")

    def fresh_store(self) -> None:
        from django.core.management import call_command

        self.close()
        harness.recreate_pg_database(self.admin_url, DB_NAME)
        call_command("migrate", verbosity=0, interactive=False)

    def clear_jobs(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {self.model._meta.db_table}")

    def close(self) -> None:
        from django.db import connections

        connections.close_all()

    def drop_store(self) -> None:
        harness.drop_pg_database(self.admin_url, DB_NAME)

    def before_counting(self) -> None:
        self.close()

    # --- workers

    def start_workers(
        self, count: int, count_dir: Path | None = None
    ) -> list[subprocess.Popen[bytes]]:
        ready_dir = self.work / f"ready-{time.time_ns()}"
        ready_dir.mkdir()
        env = {**self._env(), ready.READY_DIR_ENV: str(ready_dir)}
        if count_dir is not None:
            env[wirecount.COUNT_DIR_ENV] = str(count_dir)
        procs = []
        for i in range(count):
            cmd = [
                harness.PYTHON,
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
                harness.start_process(cmd, harness.child_env(env), self.log_path(f"worker{i}"))
            )
        harness.wait_ready_files(ready_dir, procs, count, f"{count} db_workers to poll")
        return procs

    # --- client

    def submit_single(self, n: int, start: int = 0) -> Any:
        return [self.noop.enqueue(i) for i in range(start, start + n)]

    def _finished(self, ids: list[str]) -> list[tuple[Any, Any]]:
        from django.tasks import TaskResultStatus

        rows = list(
            self.model.objects.filter(id__in=ids)
            .exclude(status__in=[TaskResultStatus.READY, TaskResultStatus.RUNNING])
            .values_list("id", "status", "return_value")
        )
        if failed := [r for r in rows if r[1] != TaskResultStatus.SUCCESSFUL]:
            raise RuntimeError(f"django-tasks-db: {len(failed)} tasks ended {failed[0][1]}")
        return [(str(job_id), value) for job_id, _, value in rows]

    def read_results(self, handles: Any, n: int, batch: bool) -> None:
        self.poll_results({str(r.id): i for i, r in enumerate(handles)}, self._finished)

    def read_each(self, handles: Any, n: int, start: int = 0) -> None:
        from django.tasks import TaskResultStatus

        for i, result in enumerate(handles, start):
            result.refresh()
            if result.status != TaskResultStatus.SUCCESSFUL or result.return_value != i:
                raise RuntimeError(f"django-tasks-db task {result.id}: {result.status}")

    def done_count(self, handles: Any) -> int:
        from django.tasks import TaskResultStatus

        ids = [str(r.id) for r in handles]
        return int(
            self.model.objects.filter(id__in=ids)
            .exclude(status__in=[TaskResultStatus.READY, TaskResultStatus.RUNNING])
            .count()
        )

    def round_trip(self, i: int) -> None:
        from django.tasks import TaskResultStatus

        result = self.noop.enqueue(i)
        deadline = time.monotonic() + 30
        while True:
            result.refresh()
            if result.status == TaskResultStatus.SUCCESSFUL:
                break
            if result.status == TaskResultStatus.FAILED or time.monotonic() > deadline:
                raise RuntimeError(f"django-tasks-db task {result.id}: {result.status}")
            time.sleep(harness.ROUND_TRIP_POLL_SEC)
        if result.return_value != i:
            raise RuntimeError(f"django-tasks-db task {result.id} returned {result.return_value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_options(parser)
    parser.add_argument("--postgres-url", default=harness.DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="db_worker --interval (its default: 1)"
    )
    parser.add_argument(
        "--tuned",
        action="store_true",
        help=f"CONN_MAX_AGE {TUNED_CONN_MAX_AGE} and CONN_HEALTH_CHECKS on (Django's: 0, off)",
    )
    args = parser.parse_args(argv)
    harness.finish_options(parser, args)
    return harness.main(DjangoTasksDbBench(args, harness.work_dir("djtasks")))


if __name__ == "__main__":
    sys.exit(main())
