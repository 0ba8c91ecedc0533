"""The pynenc systems of ``make bench``, measured by ``bench/harness.py`` like every peer.

    .venv/bin/python -m bench.throughput --system SYSTEM [--tuned] [--run-index K]
        [--tasks 2000] [--workers 2] [--latency-calls 50] [--out FILE.json] [--quick]
    .venv/bin/python -m bench.throughput --system pynenc-django-postgresql --seeded \
        [--seed-rows 1000000] [--drop-seeded] ...

``SYSTEM`` is ``pynenc-django-sqlite``, ``pynenc-django-postgresql``, ``pynenc-django-mariadb``
(``bench/manage.py pynenc_runner --processes W``, DjangoPersistentProcessRunner) or
``pynenc-sqlite`` (pynenc 0.4's own SQLite backend and PersistentProcessRunner,
``bench/pynenc_sqlite_reference.py``: the reference). The client is this process; the runner
is a subprocess in its own session, whose whole process group is killed on any exit. pynenc
logs at WARNING on both sides.

pynenc-django runs with Django's defaults, ``CONN_MAX_AGE`` 0 and no health checks (the
report's headline rows: what a Quick start project gets); ``--tuned`` sets ``CONN_MAX_AGE``
60 and ``CONN_HEALTH_CHECKS`` on, in the client and the runner (the ``-tuned`` rows).

Single submit: ``noop(i)`` per task; batch: ``noop.parallelize([(i,) ...])``. Results: each
invocation's ``.result`` in submit order after single submits, ``group.results`` after a
batch, ``noop(i).result`` per round trip (pynenc's own waits). Each run uses a fresh database
(``pynenc_django_bench_tp`` on the servers, recreated and migrated per phase; a temp file for
SQLite; ``app.purge()`` for the reference).

``--seeded`` (PostgreSQL, the ``pynenc-django-postgresql-seeded`` row): only the end-to-end
measurement at W=2, on a database holding ``--seed-rows`` finished invocations
(``pynenc_django_bench_seeded``: ``manage.py pynenc_seed``, made all final, see
:func:`finalize_seed`, ``VACUUM ANALYZE``), seeded by the first run that finds it missing and
kept for the next runs (``--drop-seeded`` drops it after measuring).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from bench import harness, ready, wirecount
from bench.harness import Deadline, log
from bench.runner_idle_wake import (
    COUNT_DIR_ENV,
    MANAGE,
    REFERENCE_SCRIPT,
    child_env,
    recreate_database,
    versions,
)

__all__ = [  # what bench/fan_in.py and bench/delayed.py use
    "FINAL_STATUSES",
    "Deadline",
    "DjangoSystem",
    "check_server",
    "drop_database",
    "terminate_as_interrupt",
    "with_db_name",
]

DB_NAME = "pynenc_django_bench_tp"
SEEDED_DB_NAME = "pynenc_django_bench_seeded"
DJANGO_APP_ID = "pynenc-django-bench"  # bench/settings.py PYNENC["app_id"]
SYSTEMS = (
    "pynenc-django-sqlite",
    "pynenc-django-postgresql",
    "pynenc-django-mariadb",
    "pynenc-sqlite",
)
DEFAULT_URLS = {
    "postgresql": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "mariadb": f"mysql://root@127.0.0.1:3306/{DB_NAME}",
}
SEED_ROWS, SEED_ROWS_QUICK = 10_000_000, 20_000
TUNED_CONN_MAX_AGE = 60
SEEDED_WORKERS = 2
LOG_LEVEL = "warning"
FINAL_STATUSES = ("success", "failed", "concurrency_controlled_final")


# ---------------------------------------------------------------------------- helpers


def with_db_name(url: str, name: str) -> str:
    """The server URL with our own database name: the harness drops it, so never another."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def check_server(vendor: str, url: str) -> None:
    """Exit with one clear line when the server is unreachable."""
    import dj_database_url

    params = dj_database_url.parse(url)
    host, port = params["HOST"] or "127.0.0.1", params["PORT"]
    try:
        if vendor == "postgresql":
            import psycopg

            psycopg.connect(
                host=host,
                port=port or 5432,
                user=params["USER"],
                password=params["PASSWORD"] or None,
                dbname="postgres",
                connect_timeout=5,
            ).close()
        else:
            import MySQLdb

            MySQLdb.connect(
                host=host,
                port=int(port or 3306),
                user=params["USER"],
                password=params["PASSWORD"] or "",
                connect_timeout=5,
            ).close()
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SystemExit(f"{vendor} server at {host}:{port} is unreachable: {reason}") from None


# ---------------------------------------------------------------------------- systems


class System:
    """What differs between the pynenc systems: the client app, the runner, the database."""

    name: str
    kind: str
    task: Any  # the client's noop task (module level: the workers import it)
    app: Any

    def __init__(self, work: Path, client_counts: Path) -> None:
        self.work, self.client_counts = work, client_counts

    def setup_client(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """A fresh, empty database (no runner may be running)."""
        raise NotImplementedError

    def empty(self) -> None:
        """Every job forgotten between phases (no runner may be running)."""
        self.reset()

    def runner_command(self, workers: int) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def database(self) -> str:
        raise NotImplementedError

    def label(self) -> str:
        raise NotImplementedError

    def drop(self) -> None:
        """Remove the database at the end."""


class DjangoSystem(System):
    kind = "pynenc-django"

    def __init__(
        self,
        vendor: str,
        url: str,
        work: Path,
        client_counts: Path,
        conn_max_age: int,
        *,
        health_checks: bool = False,
        count_client: bool = True,
        no_flush_wait: bool = False,
    ) -> None:
        super().__init__(work, client_counts)
        self.vendor, self.url = vendor, url
        self.name = f"pynenc-django-{vendor}"
        self.sqlite_path = work / f"{DB_NAME}.sqlite3"
        self.conn_max_age, self.health_checks = conn_max_age, health_checks
        # bench/benchapp/counting.py in the client (fan_in.py, delayed.py); never in make bench
        self.count_client = count_client
        self.env = {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BENCH_DATABASE_URL": url,
            "BENCH_SQLITE_PATH": str(self.sqlite_path),
            "BENCH_CONN_MAX_AGE": str(conn_max_age),
            "BENCH_CONN_HEALTH_CHECKS": "1" if health_checks else "",
            "BENCH_PYNENC_LOG_LEVEL": LOG_LEVEL,
        }
        if no_flush_wait:  # libpq reads it at connect time: the client's and the runner's
            self.env["PGOPTIONS"] = "-c synchronous_commit=off"
        self._database: str | None = None

    def setup_client(self, fresh: bool = True) -> None:
        if fresh:
            recreate_database(self.vendor, self.url, self.sqlite_path)
        os.environ.update(self.env)
        if self.count_client:
            os.environ[COUNT_DIR_ENV] = str(self.client_counts)
        import django

        django.setup()
        self._migrate()
        from bench.benchapp.tasks import noop

        self.task = noop
        self.app = noop.app

    def _migrate(self) -> None:
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)

    def close(self) -> None:
        from django.db import connections

        connections.close_all()
        # The client's result LISTEN connection too (the database may be dropped next).
        if (waiter := vars(self.task.app.runner).get("_result_waiter")) is not None:
            waiter.close()

    def reset(self) -> None:
        self.close()
        recreate_database(self.vendor, self.url, self.sqlite_path)
        self._migrate()

    def empty(self) -> None:
        """Every pynenc table emptied through the client's own connection, as procrastinate's
        and django-tasks-db's ``TRUNCATE``: the next phase finds the client as its warm-up
        left it (connection, prepared statements) and the tables' planner statistics kept.
        Recreating the database instead made every phase start cold, ours only."""
        from django.apps import apps
        from django.db import connection

        tables = [
            connection.ops.quote_name(model._meta.db_table)
            for model in apps.get_app_config("pynenc_django").get_models()
        ]
        with connection.cursor() as cursor:
            if self.vendor == "postgresql":
                cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
            elif self.vendor == "mariadb":
                for table in tables:
                    cursor.execute(f"TRUNCATE TABLE {table}")
            else:
                for table in tables:
                    cursor.execute(f"DELETE FROM {table}")

    def runner_command(self, workers: int) -> tuple[list[str], dict[str, str]]:
        cmd = [sys.executable, str(MANAGE), "pynenc_runner", "--processes", str(workers)]
        return [*cmd, "--log-level", LOG_LEVEL], child_env(self.env)

    def database(self) -> str:
        if self._database is None:
            from django.db import connection

            if self.vendor == "sqlite":
                self._database = f"SQLite {sqlite3.sqlite_version}"
            else:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT VERSION()")
                    raw = str(cursor.fetchone()[0])
                if self.vendor == "postgresql":
                    self._database = f"PostgreSQL {raw.split()[1]}"
                else:
                    kind = "MariaDB" if "mariadb" in raw.lower() else "MySQL"
                    self._database = f"{kind} {raw.split('-')[0]}"
        return self._database

    def label(self) -> str:
        return f"pynenc-django on {self.database()}"

    def seed(self, count: int) -> str:
        """``count`` finished invocations in the bench app; a note of what it took."""
        started = time.monotonic()
        subprocess.run(
            [sys.executable, str(MANAGE), "pynenc_seed", "--count", str(count)]
            + ["--app-id", DJANGO_APP_ID],
            env=child_env(self.env),
            check=True,
            cwd=MANAGE.parent.parent,
            stdout=subprocess.DEVNULL,
        )
        seeded = time.monotonic() - started
        changed = finalize_seed(DJANGO_APP_ID)
        finalized = time.monotonic() - started - seeded
        analyze(self.vendor)
        total = time.monotonic() - started
        size = ""
        if self.vendor == "postgresql":
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_database_size(current_database())")
                size = f", database {cursor.fetchone()[0] / 2**30:.1f} GiB"
        return (
            f"seeded {count:,} invocations into app id {DJANGO_APP_ID!r} with manage.py "
            f"pynenc_seed in {seeded:.0f} s ({seeded / count * 1e6:.0f} s per million, "
            f"{'COPY' if self.vendor == 'postgresql' else 'bulk_create'}), made them all "
            f"final in {finalized:.0f} s ({changed}), then "
            f"{'VACUUM ANALYZE, CHECKPOINT' if self.vendor == 'postgresql' else 'ANALYZE'}: "
            f"{total:.0f} s in all ({total / count * 1e6:.0f} s per million){size}"
        )

    def sessions(self) -> int | None:
        if self.vendor != "postgresql":
            return None
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(cursor.fetchone()[0])

    def drop(self) -> None:
        from django.db import connections

        connections.close_all()
        recreate_database(self.vendor, self.url, self.sqlite_path, drop_only=True)


class Trip(NamedTuple):
    """One round trip as the client saw it (``time.time()``, the clock the statuses use)."""

    invocation_id: str
    started: float
    submitted: float
    done: float


#: Where a round trip's time goes, from the client's clock and the status timestamps each
#: process takes just before the statement that records it (one machine, one clock).
TRIP_SEGMENTS = (
    "client, to its submit statement",
    "submit statement and commit",
    "to the worker's claim",
    "claim, task and SUCCESS",
    "SUCCESS to the result read",
)


def round_trip_breakdown(trips: list[Trip]) -> dict[str, float]:
    """The median of each of :data:`TRIP_SEGMENTS` over ``trips``, and of the whole, in ms."""
    from pynenc_django.models import InvocationHistory

    stamps: dict[str, dict[str, float]] = {}
    history = InvocationHistory.objects.filter(
        app_id=DJANGO_APP_ID, invocation_id__in=[t.invocation_id for t in trips]
    ).values_list("invocation_id", "status", "status_timestamp")
    for invocation_id, status, at in history:
        stamps.setdefault(invocation_id, {})[status] = at.timestamp()
    parts: list[list[float]] = [[] for _ in range(len(TRIP_SEGMENTS) + 1)]
    for trip in trips:
        got = stamps.get(trip.invocation_id, {})
        if not {"registered", "pending", "success"} <= got.keys():
            continue
        points = [trip.started, got["registered"], trip.submitted, got["pending"]]
        points += [got["success"], trip.done]
        for k in range(len(TRIP_SEGMENTS)):
            parts[k].append(points[k + 1] - points[k])
        parts[-1].append(trip.done - trip.started)
    if not parts[-1]:
        return {}
    names = (*TRIP_SEGMENTS, "round trip")
    return {
        name: round(statistics.median(p) * 1000, 3) for name, p in zip(names, parts, strict=True)
    }


def finalize_seed(app_id: str) -> str:
    """Leave only finished work behind ``pynenc_seed``.

    It writes a realistic mix: ~15 % of the invocations are not final (registered, pending,
    running, retry, paused...), ~8 % have queued broker messages, running ones have blocking
    edges, and its fake runners hold the atomic-service gate. Seeded into the bench app id,
    the runner would try to run tens of thousands of ``seed.tasks.*`` invocations that do not
    exist, and recovery would reroute the "running" ones: the measurement would be of that.
    So: every non-final invocation becomes ``success``, queued messages, blocking edges and
    delayed ones too (due, the workers would move them to queues nobody consumes), and the
    fake runners' heartbeats are deleted, and the gate is freed.
    """
    from django.db import transaction

    from pynenc_django.models import (
        AtomicServiceGate,
        BlockingEdge,
        BrokerMessage,
        DelayedMessage,
        Invocation,
        RunnerHeartbeat,
    )

    with transaction.atomic():
        finals = (
            Invocation.objects.filter(app_id=app_id)
            .exclude(status__in=FINAL_STATUSES)
            .update(status="success", status_runner_id=None)
        )
        messages = BrokerMessage.objects.filter(app_id=app_id).delete()[0]
        messages += DelayedMessage.objects.filter(app_id=app_id).delete()[0]
        edges = BlockingEdge.objects.filter(app_id=app_id).delete()[0]
        beats = RunnerHeartbeat.objects.filter(app_id=app_id).delete()[0]
        AtomicServiceGate.objects.filter(app_id=app_id).update(
            running_run_id=None, runner_id=None, started_at=None
        )
    return (
        f"{finals:,} non-final invocations set to success, {messages:,} queued and delayed "
        "broker messages, "
        f"{edges:,} blocking edges and {beats:,} fake runner heartbeats deleted"
    )


def analyze(vendor: str) -> None:
    """Fresh planner statistics after the bulk load, as a maintained database would have."""
    from django.apps import apps
    from django.db import connection

    tables = [m._meta.db_table for m in apps.get_app_config("pynenc_django").get_models()]
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE")
            cursor.execute("CHECKPOINT")  # the load's dirty pages written now, not later
        elif vendor == "mariadb":
            cursor.execute("ANALYZE TABLE " + ", ".join(f"`{t}`" for t in tables))
            cursor.fetchall()
        else:
            cursor.execute("ANALYZE")


class ReferenceSystem(System):
    """pynenc 0.4's built-in SQLite backend and PersistentProcessRunner."""

    name = "pynenc-sqlite"
    kind = "pynenc-reference"
    tasks_module = "bench.tp_reference_tasks"

    def __init__(self, work: Path, client_counts: Path) -> None:
        super().__init__(work, client_counts)
        self.db_path = work / "pynenc_reference.sqlite3"

    def setup_client(self) -> None:
        os.environ["BENCH_TP_REFERENCE_DB"] = str(self.db_path)
        from bench.tp_reference_tasks import app, noop

        self.app, self.task = app, noop

    def reset(self) -> None:
        # The client's components created their tables when built; purge drops and
        # recreates them (deleting the file would leave the client without tables).
        self.app.purge()

    def runner_command(self, workers: int) -> tuple[list[str], dict[str, str]]:
        cmd = [sys.executable, str(REFERENCE_SCRIPT), str(self.db_path), str(workers)]
        return [*cmd, "--tasks-module", self.tasks_module], child_env({})

    def database(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def label(self) -> str:
        return f"pynenc {versions()['pynenc']} SQLite backend, PersistentProcessRunner (reference)"


def server_url(system: str, args: argparse.Namespace, name: str = DB_NAME) -> tuple[str, str]:
    """(vendor, URL with our database name) of a pynenc-django system; URL empty on SQLite."""
    vendor = system.removeprefix("pynenc-django-")
    if vendor == "sqlite":
        return vendor, ""
    return vendor, with_db_name(
        args.postgres_url if vendor == "postgresql" else args.mariadb_url, name
    )


def drop_database(system: System, attempts: int = 5) -> None:
    """Drop the bench database, retrying a while: the server may be restarting (shared)."""
    for attempt in range(1, attempts + 1):
        try:
            system.drop()
            return
        except Exception as exc:
            if attempt == attempts:
                log(f"could not drop the bench database: {exc}")
                return
            time.sleep(3)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP to the benchmark unwind like Ctrl-C, so the cleanup runs."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous: dict[int, Callable[..., Any] | int | None] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------- the bench


class PynencBench(harness.Bench):
    """A pynenc system (pynenc-django on one database, or the reference) in the harness."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.seeded = bool(args.seeded)
        self._trips: list[Trip] = []
        self.trip_breakdown: dict[str, float] = {}
        counts = work / "counts-client"
        counts.mkdir()
        self.pynenc: System
        if args.system == "pynenc-sqlite":
            self.pynenc = ReferenceSystem(work, counts)
        else:
            vendor, url = server_url(args.system, args, SEEDED_DB_NAME if self.seeded else DB_NAME)
            self.pynenc = DjangoSystem(
                vendor,
                url,
                work,
                counts,
                TUNED_CONN_MAX_AGE if args.tuned else 0,
                health_checks=args.tuned,
                count_client=False,
                no_flush_wait=args.no_flush_wait,
            )
            if vendor == "postgresql":
                self.server_work_url = url
        self.kind = self.pynenc.kind
        self.system = args.system + ("-tuned" if args.tuned else "")
        if self.seeded:
            self.system = args.system + "-seeded"
        if args.no_flush_wait:
            self.system = args.system + "-nowait"
        self.submit_description = (
            "single: noop(i) per task; batch: noop.parallelize([(i,) for i in range(N)])"
        )
        self.wait_description = (
            "pynenc's own waits: invocation.result for each after single submits, "
            "group.results after a batch, noop(i).result per round trip"
        )
        if isinstance(self.pynenc, DjangoSystem):
            self.notes.append(
                f"CONN_MAX_AGE {self.pynenc.conn_max_age}, CONN_HEALTH_CHECKS "
                f"{self.pynenc.health_checks} in the client and the runner"
                + ("" if args.tuned else " (Django's defaults)")
            )
            self.notes.append(
                "W workers = `manage.py pynenc_runner --processes W` (DjangoPersistentProcess"
                "Runner: a parent and W worker processes); pynenc-django's defaults otherwise"
            )
        else:
            self.notes.append(
                "W workers = pynenc's PersistentProcessRunner(num_processes=W) on its own "
                "SQLite backend (bench/pynenc_sqlite_reference.py)"
            )

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        if isinstance(self.pynenc, DjangoSystem):
            out["conn_max_age"] = self.pynenc.conn_max_age
            out["conn_health_checks"] = self.pynenc.health_checks
        if self.seeded:
            out["seed_rows"] = self.args.seed_rows
        return out

    # --- store

    def connect(self) -> None:
        if isinstance(self.pynenc, DjangoSystem) and self.pynenc.url:
            check_server(self.pynenc.vendor, self.pynenc.url)
        if self.seeded:
            assert isinstance(self.pynenc, DjangoSystem)
            have = seeded_rows(self.pynenc.url)
            self.pynenc.setup_client(fresh=have != self.args.seed_rows)
            if have != self.args.seed_rows:
                log(f"seeding {self.args.seed_rows:,} invocations (found {have})")
                note = self.pynenc.seed(self.args.seed_rows)
                mark_seeded(self.pynenc.url, self.args.seed_rows)
                log(note)
                self.notes.append(f"run {self.args.run_index}: {note}")
                self.pynenc._migrate()  # a migration added meanwhile (a shared work tree)
            else:
                self.notes.append(
                    f"run {self.args.run_index}: reused the database seeded by an earlier run"
                )
        else:
            self.pynenc.setup_client()

    def database(self) -> str:
        return self.pynenc.database()

    def label(self) -> str:
        label = self.pynenc.label()
        if self.args.tuned:
            label += ", CONN_MAX_AGE 60 + health checks"
        if self.seeded:
            label += f", {self.args.seed_rows:,} finished invocations"
        if self.args.no_flush_wait:
            label += ", synchronous_commit off (not durable)"
        return label

    def versions(self) -> dict[str, str]:
        return {**versions(), "sqlite": sqlite3.sqlite_version}

    def fresh_store(self) -> None:
        if not self.seeded:
            self.pynenc.reset()

    def clear_jobs(self) -> None:
        if self._trips and isinstance(self.pynenc, DjangoSystem):  # the round trips' history
            self.trip_breakdown = round_trip_breakdown(self._trips[harness.LATENCY_WARMUPS :])
            self._trips = []
        if not self.seeded:  # the seeded database keeps what each run adds (finished)
            self.pynenc.empty()

    def drop_store(self) -> None:
        if not self.seeded or self.args.drop_seeded:
            drop_database(self.pynenc)
        elif isinstance(self.pynenc, DjangoSystem):
            self.pynenc.close()

    def close(self) -> None:
        if isinstance(self.pynenc, DjangoSystem):
            self.pynenc.close()

    def before_counting(self) -> None:
        if isinstance(self.pynenc, DjangoSystem):
            # Reopened after wirecount.install: SQLite's trace callback is per connection.
            self.pynenc.close()

    # --- workers

    def start_workers(
        self, count: int, count_dir: Path | None = None
    ) -> list[subprocess.Popen[bytes]]:
        ready_dir = self.work / f"ready-{time.time_ns()}"
        ready_dir.mkdir()
        cmd, env = self.pynenc.runner_command(count)
        env = harness.child_env(env)
        env[ready.READY_DIR_ENV] = str(ready_dir)
        if count_dir is not None:
            env[wirecount.COUNT_DIR_ENV] = str(count_dir)
        proc = harness.start_process(cmd, env, self.log_path(f"runner{count}"))

        def up() -> bool:
            marks = ready.read(ready_dir)
            workers = [m for m in marks if m["ppid"] == proc.pid]
            return len(workers) >= count and any(m["pid"] == proc.pid for m in marks)

        harness.wait_until(
            up,
            f"the runner's {count} workers",
            timeout=harness.READY_TIMEOUT_SEC,
            procs=[proc],
            interval=0.1,
        )
        return [proc]

    # --- client

    def submit_single(self, n: int, start: int = 0) -> Any:
        task = self.pynenc.task
        return [task(i) for i in range(start, start + n)]

    def submit_batch(self, n: int) -> Any:
        group = self.pynenc.task.parallelize([(i,) for i in range(n)])
        if len(group.invocations) != n:
            raise RuntimeError(f"parallelize returned {len(group.invocations)} invocations")
        return group

    def read_results(self, handles: Any, n: int, batch: bool) -> None:
        values = list(handles.results) if batch else [inv.result for inv in handles]
        if len(values) != n or sum(values) != n * (n - 1) // 2:
            raise RuntimeError(f"got {len(values)} results summing to {sum(values)}")

    def read_each(self, handles: Any, n: int, start: int = 0) -> None:
        values = [inv.result for inv in handles]
        if values != list(range(start, start + n)):
            raise RuntimeError("wrong results")

    def done_count(self, handles: Any) -> int:
        """A plain query: pynenc-django's ``filter_final`` would remember the finals it sees
        (and the result read after it would find them remembered)."""
        invocations = handles.invocations if hasattr(handles, "invocations") else handles
        ids = [inv.invocation_id for inv in invocations]
        if not isinstance(self.pynenc, DjangoSystem):
            return len(list(self.pynenc.app.orchestrator.filter_final(ids)))  # no cache
        from pynenc_django.models import Invocation

        return sum(
            Invocation.objects.filter(
                app_id=DJANGO_APP_ID,
                invocation_id__in=ids[i : i + 500],
                status__in=FINAL_STATUSES,
            ).count()
            for i in range(0, len(ids), 500)
        )

    def round_trip(self, i: int) -> None:
        started = time.time()
        invocation = self.pynenc.task(i)
        submitted = time.time()
        value = invocation.result
        if value != i:
            raise RuntimeError(f"noop({i}) returned {value!r}")
        self._trips.append(Trip(invocation.invocation_id, started, submitted, time.time()))

    def latency(self) -> list[float]:
        self._trips = []
        samples = super().latency()  # its workers' end clears the jobs: clear_jobs reads them
        if self.trip_breakdown:
            log(
                f"{self.system}: round trip, medians: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in self.trip_breakdown.items())
            )
        return samples

    def measure_run(self, run: int) -> dict[str, Any]:
        if not self.seeded:
            self.trip_breakdown = {}
            entry = super().measure_run(run)
            if self.trip_breakdown:
                entry["round_trip_breakdown_ms"] = self.trip_breakdown
            return entry
        self.run = run
        self.warm_up()  # as the empty row's submit phase warms its client
        single, batch, notes = self.throughput(SEEDED_WORKERS, self.args.tasks)
        self.notes += [f"run {run}: {n}" for n in notes]
        if self.args.drop_seeded:
            self.notes.append(f"run {run}: the seeded database dropped after this run")
        return {
            "run": run,
            "throughput_single": {str(SEEDED_WORKERS): round(single, 2)},
            "throughput_batch": {str(SEEDED_WORKERS): None if batch is None else round(batch, 2)},
            "seed_rows": self.args.seed_rows,
        }


def _pg_admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(with_db_name(url, "postgres"), autocommit=True, connect_timeout=5)


def seeded_rows(url: str) -> int | None:
    """How many invocations the seeded database holds, by the comment a finished seeding
    left on it; None when there is no such database (or an unfinished one)."""
    with _pg_admin(url) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (urlsplit(url).path.lstrip("/"),),
        ).fetchone()
    comment = (row or [None])[0] or ""
    prefix = "pynenc-django bench seeded "
    return int(comment.removeprefix(prefix)) if comment.startswith(prefix) else None


def mark_seeded(url: str, rows: int) -> None:
    name = urlsplit(url).path.lstrip("/")
    with _pg_admin(url) as conn:
        conn.execute(f"COMMENT ON DATABASE \"{name}\" IS 'pynenc-django bench seeded {rows}'")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--system", required=True, choices=SYSTEMS)
    harness.add_options(parser)
    parser.add_argument(
        "--tuned",
        action="store_true",
        help=f"pynenc-django: CONN_MAX_AGE {TUNED_CONN_MAX_AGE} and CONN_HEALTH_CHECKS on",
    )
    parser.add_argument(
        "--seeded", action="store_true", help="end to end at W=2 on the seeded database only"
    )
    parser.add_argument(
        "--seed-rows", type=int, help=f"finished invocations (default {SEED_ROWS:,})"
    )
    parser.add_argument("--drop-seeded", action="store_true", help="drop it after measuring")
    parser.add_argument(
        "--no-flush-wait",
        action="store_true",
        help="PostgreSQL: synchronous_commit off in the client and the runner, a diagnostic "
        "of what waiting for WAL flushes costs (not durable)",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--mariadb-url", default=DEFAULT_URLS["mariadb"])
    args = parser.parse_args(argv)
    harness.finish_options(parser, args)
    if args.seed_rows is None:
        args.seed_rows = SEED_ROWS_QUICK if args.quick else SEED_ROWS
    if args.seeded and args.system != "pynenc-django-postgresql":
        parser.error("--seeded: pynenc-django-postgresql only")
    if args.no_flush_wait and (args.system != "pynenc-django-postgresql" or args.tuned):
        parser.error("--no-flush-wait: pynenc-django-postgresql only, with its defaults")
    if args.tuned and args.system == "pynenc-sqlite":
        parser.error("--tuned: pynenc-django only (pynenc's SQLite backend has no Django)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = harness.work_dir(args.system)
    try:
        bench = PynencBench(args, work)
        return harness.main(bench)
    except SystemExit as exc:  # check_server's one-line message
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
