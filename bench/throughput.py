"""Throughput, submit rate, round trip and SQL per invocation of the pynenc systems.

    .venv/bin/python -m bench.throughput --system SYSTEM [--runs 3] [--tasks 2000]
        [--workers 1,2,4] [--latency-calls 50] [--out FILE.json] [--million] [--quick]

``SYSTEM`` is ``pynenc-django-sqlite``, ``pynenc-django-postgresql``, ``pynenc-django-mariadb``
(``manage.py pynenc_runner``, DjangoPersistentProcessRunner) or ``pynenc-sqlite`` (pynenc 0.4's
own SQLite backend and PersistentProcessRunner, ``bench/pynenc_sqlite_reference.py``: the
reference). This process is the client; the runner is a subprocess in its own session, whose
whole process group is killed on any exit. pynenc logs at WARNING on both sides.

Per run (``--runs``), each on a fresh database (``pynenc_django_bench_tp`` on the servers,
recreated and migrated; a temp file for SQLite; pynenc's ``app.purge()`` for the reference):

1. end-to-end throughput per worker count W (runner restarted for each W, its workers up
   and idle first): ``noop.parallelize(N)`` and every result read through the group, from
   the first submit to the last result; N / elapsed;
2. submit rate, no runner running: N ``noop(i)`` calls one by one, then one
   ``noop.parallelize(N)``;
3. with W=2 idle (5 s warm-up): idle statements/s of the busiest worker over 10 s; then
   ``--latency-calls`` sequential ``noop(i).result`` round trips (+2 unmeasured) after a
   seeded 0.05-0.2 s idle gap each; then ``--lifecycle-calls`` back-to-back calls, counting
   the SQL statements of every process (client, runner parent, workers) per call.

``--million`` seeds 1,000,000 invocations into the bench app id once (``pynenc_seed``, then
made all-final, see :func:`finalize_seed`), analyzes, and measures W=2 throughput per run.

Statements are counted by ``bench/benchapp/counting.py`` (Django ``execute_wrappers``; for
the reference, SQLite's trace callback) in every process; see ``bench/README.md``.
Output: one JSON file (the contract shared with the report script, see ``write_result``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.runner_idle_wake import (
    COUNT_DIR_ENV,
    MANAGE,
    REFERENCE_SCRIPT,
    RESULTS_DIR,
    TX_CONTROL,
    child_env,
    idle_window,
    kill_group,
    log,
    log_tail,
    percentile,
    process_tree,
    read_counts,
    recreate_database,
    start_process,
    stop_process,
    versions,
    wait_for_workers,
)

DB_NAME = "pynenc_django_bench_tp"
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
FULL = {"tasks": 2000, "runs": 3, "workers": "1,2,4", "latency_calls": 50, "lifecycle_calls": 200}
QUICK = {"tasks": 200, "runs": 1, "workers": "2", "latency_calls": 10, "lifecycle_calls": 50}
MILLION, MILLION_QUICK = 1_000_000, 20_000
LOG_LEVEL = "warning"
FINAL_STATUSES = ("success", "failed", "concurrency_controlled_final")
BREAKDOWN_TOP = 30


# ---------------------------------------------------------------------------- helpers


class Deadline:
    """Turns a stall into an error: after ``seconds``, or as soon as the runner exits, the
    main thread gets a KeyboardInterrupt that :meth:`__exit__` turns into a RuntimeError
    (pynenc's result waits loop forever when nothing completes).

    The interrupt is repeated until the main thread has left the block: one raised while
    SQLite runs a trace callback (the statement counter) is swallowed by ``sqlite3``.
    """

    def __init__(self, seconds: float, what: str, runner: subprocess.Popen | None = None):
        self.seconds, self.what, self.runner = seconds, what, runner
        self.reason: str | None = None
        self._done = threading.Event()

    def _watch(self) -> None:
        import _thread

        end = time.monotonic() + self.seconds
        while not self._done.wait(0.5):
            if self.reason is None:
                if self.runner is not None and self.runner.poll() is not None:
                    self.reason = f"the runner exited with {self.runner.returncode}"
                elif time.monotonic() > end:
                    self.reason = f"not done after {self.seconds:.0f} s"
                    if self.runner is not None:
                        dump_stacks(self.runner)
                else:
                    continue
                log(f"{self.what}: {self.reason}; interrupting")
            if not self._done.is_set():
                _thread.interrupt_main()

    def __enter__(self) -> Deadline:
        threading.Thread(target=self._watch, name="bench-deadline", daemon=True).start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._done.set()
        if exc_type is KeyboardInterrupt and self.reason:
            raise RuntimeError(f"{self.what}: {self.reason}") from None
        return False


def dump_stacks(proc: subprocess.Popen) -> None:
    """py-spy dumps of the runner's processes, when py-spy is installed (evidence of stalls)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        log("stall: py-spy not installed, no stack dumps")
        return
    for pid in process_tree(proc.pid):
        out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True)
        log(f"py-spy dump of {pid}:\n{out.stdout}{out.stderr}")


def statement_delta(
    before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]], counter: str
) -> Counter[str]:
    """Statements per normalized text executed between two snapshots, all processes summed
    (a process that appeared in between counts from zero)."""
    delta: Counter[str] = Counter()
    for pid, end in after.items():
        start = before.get(pid, {}).get(counter, {})
        for sql, n in end[counter].items():
            if n - start.get(sql, 0):
                delta[sql] += n - start.get(sql, 0)
    return delta


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
    """What differs between the systems: the client app, the runner, the database."""

    name: str
    kind: str
    counter: str  # which counter of counting.py: "django" or "engine"
    # The statement every worker loop iteration runs once (see without_empty_polls).
    poll_marker: re.Pattern[str] | None = None
    task: Any  # the client's noop task (module level: the workers import it)

    def __init__(self, work: Path, client_counts: Path) -> None:
        self.work, self.client_counts = work, client_counts

    def setup_client(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """A fresh, empty database (no runner may be running)."""
        raise NotImplementedError

    def runner_command(self, workers: int) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def database(self) -> str:
        raise NotImplementedError

    def label(self) -> str:
        raise NotImplementedError

    def seed(self, count: int) -> str | None:
        """Seed ``count`` finished invocations; None when unsupported, else a note."""
        return None

    def sessions(self) -> int | None:
        """Connections opened to the bench database so far, where the server counts them."""
        return None

    def drop(self) -> None:
        """Remove the database at the end."""


class DjangoSystem(System):
    kind = "pynenc-django"
    counter = "django"

    def __init__(
        self, vendor: str, url: str, work: Path, client_counts: Path, conn_max_age: int
    ) -> None:
        super().__init__(work, client_counts)
        self.vendor, self.url = vendor, url
        self.name = f"pynenc-django-{vendor}"
        self.sqlite_path = work / f"{DB_NAME}.sqlite3"
        self.env = {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BENCH_DATABASE_URL": url,
            "BENCH_SQLITE_PATH": str(self.sqlite_path),
            "BENCH_CONN_MAX_AGE": str(conn_max_age),
            "BENCH_PYNENC_LOG_LEVEL": LOG_LEVEL,
        }
        self._database: str | None = None

    def setup_client(self) -> None:
        recreate_database(self.vendor, self.url, self.sqlite_path)
        os.environ.update(self.env)
        os.environ[COUNT_DIR_ENV] = str(self.client_counts)  # count the client's SQL too
        import django

        django.setup()
        self._migrate()
        from bench.benchapp.tasks import noop

        self.task = noop

    def _migrate(self) -> None:
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)

    def reset(self) -> None:
        from django.db import connections

        connections.close_all()
        # The client's result LISTEN connection too: the database is about to be dropped.
        if (waiter := vars(self.task.app.runner).get("_result_waiter")) is not None:
            waiter.close()
        recreate_database(self.vendor, self.url, self.sqlite_path)
        self._migrate()

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

    def seed(self, count: int) -> str | None:
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
        analyze(self.vendor)
        total = time.monotonic() - started
        return (
            f"seeded {count:,} invocations into app id {DJANGO_APP_ID!r} with manage.py "
            f"pynenc_seed in {seeded:.0f} s ({'COPY' if self.vendor == 'postgresql' else 'bulk_create'}), "
            f"then made them all final ({changed}) and analyzed "
            f"({'VACUUM ANALYZE' if self.vendor == 'postgresql' else 'ANALYZE'}): {total:.0f} s in all"
        )

    def sessions(self) -> int | None:
        if self.vendor != "postgresql":
            return None  # MariaDB counts server-wide (other suites too); SQLite not at all
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


def finalize_seed(app_id: str) -> str:
    """Leave only finished work behind ``pynenc_seed``.

    It writes a realistic mix: ~15 % of the invocations are not final (registered, pending,
    running, retry, paused...), ~8 % have queued broker messages, running ones have blocking
    edges, and its fake runners hold the atomic-service gate. Seeded into the bench app id,
    the runner would try to run tens of thousands of ``seed.tasks.*`` invocations that do not
    exist, and recovery would reroute the "running" ones: the measurement would be of that.
    So: every non-final invocation becomes ``success``, queued messages, blocking edges and
    the fake runners' heartbeats are deleted, and the gate is freed.
    """
    from django.db import transaction

    from pynenc_django.models import (
        AtomicServiceGate,
        BlockingEdge,
        BrokerMessage,
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
        edges = BlockingEdge.objects.filter(app_id=app_id).delete()[0]
        beats = RunnerHeartbeat.objects.filter(app_id=app_id).delete()[0]
        AtomicServiceGate.objects.filter(app_id=app_id).update(
            running_run_id=None, runner_id=None, started_at=None
        )
    return (
        f"{finals:,} non-final invocations set to success, {messages:,} queued broker messages, "
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
        elif vendor == "mariadb":
            cursor.execute("ANALYZE TABLE " + ", ".join(f"`{t}`" for t in tables))
            cursor.fetchall()
        else:
            cursor.execute("ANALYZE")


class ReferenceSystem(System):
    """pynenc 0.4's built-in SQLite backend and PersistentProcessRunner."""

    name = "pynenc-sqlite"
    kind = "pynenc-reference"
    counter = "engine"
    tasks_module = "bench.tp_reference_tasks"
    poll_marker = re.compile(r"^SELECT id, invocation_id FROM \S+broker_message_queue WHERE")

    def __init__(self, work: Path, client_counts: Path) -> None:
        super().__init__(work, client_counts)
        self.db_path = work / "pynenc_reference.sqlite3"

    def setup_client(self) -> None:
        os.environ["BENCH_TP_REFERENCE_DB"] = str(self.db_path)
        os.environ[COUNT_DIR_ENV] = str(self.client_counts)
        from bench.benchapp.counting import install_sqlite_tracing

        install_sqlite_tracing()  # before pynenc opens its first connection
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


def server_url(args: argparse.Namespace) -> tuple[str, str]:
    """(vendor, URL with our database name) of a pynenc-django system; URL empty on SQLite."""
    vendor = args.system.removeprefix("pynenc-django-")
    if vendor == "sqlite":
        return vendor, ""
    return vendor, with_db_name(
        args.postgres_url if vendor == "postgresql" else args.mariadb_url, DB_NAME
    )


def make_system(args: argparse.Namespace, work: Path) -> System:
    client_counts = work / "counts-client"
    client_counts.mkdir()
    if args.system == "pynenc-sqlite":
        return ReferenceSystem(work, client_counts)
    vendor, url = server_url(args)
    return DjangoSystem(vendor, url, work, client_counts, args.conn_max_age)


# ---------------------------------------------------------------------------- the runner


class Runner:
    """The runner under test as a subprocess counting its statements; always killed."""

    started: list[subprocess.Popen] = []

    def __init__(
        self, system: System, workers: int, work: Path, env: dict[str, str] | None = None
    ) -> None:
        self.system, self.workers, self.env = system, workers, env or {}
        stamp = f"{workers}w-{time.monotonic_ns()}"
        self.count_dir = work / f"counts-runner-{stamp}"
        self.count_dir.mkdir()
        self.log_path = work / f"runner-{stamp}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Runner:
        cmd, env = self.system.runner_command(self.workers)
        env = {**env, **self.env, COUNT_DIR_ENV: str(self.count_dir)}
        self.proc = start_process(cmd, env, self.log_path)
        Runner.started.append(self.proc)
        wait_for_workers(
            self.proc, self.count_dir, self.workers, self.log_path, self.system.counter
        )
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            stop = stop_process(self.proc, process_tree(self.proc.pid))
            if stop["exit_code"] != 0 or stop["leftover_pids"]:
                log(f"runner did not stop cleanly: {stop}\n{log_tail(self.log_path, 10)}")
        kill_group(self.proc)
        if exc_type is not None:
            log(f"runner log tail ({self.log_path}):\n{log_tail(self.log_path, 20)}")

    def deadline(self, seconds: float, what: str) -> Deadline:
        return Deadline(seconds, what, self.proc)

    @classmethod
    def kill_all(cls) -> None:
        for proc in cls.started:
            if proc.poll() is None or process_tree(proc.pid)[1:]:
                kill_group(proc)


# ---------------------------------------------------------------------------- measurements


def all_counts(system: System, runner: Runner, settle: float = 0.5) -> dict[int, dict[str, Any]]:
    """Cumulative counts of the client and of every runner process, after ``settle``
    seconds (every process rewrites its file every 0.2 s)."""
    time.sleep(settle)
    dirs = [system.client_counts, runner.count_dir]
    return {pid: c for d in dirs for pid, c in read_counts(d).items()}


def end_to_end(system: System, runner: Runner, tasks: int) -> tuple[float, str]:
    """Tasks/s from the first submit to the last result read back, workers idle before;
    and a note with the statements per task under load (all processes, and the client's)."""
    expected = tasks * (tasks - 1) // 2
    before = all_counts(system, runner)
    with runner.deadline(max(120.0, tasks / 5), f"end to end, {tasks} tasks"):
        started = time.perf_counter()
        group = system.task.parallelize([(i,) for i in range(tasks)])
        submitted = time.perf_counter()
        results = list(group.results)
        elapsed = time.perf_counter() - started
    if len(results) != tasks or sum(results) != expected:
        raise RuntimeError(f"end to end: got {len(results)} results summing to {sum(results)}")
    after = all_counts(system, runner)
    me = os.getpid()
    total = sum(statement_delta(before, after, system.counter).values()) / tasks
    client = {pid: c for pid, c in after.items() if pid == me}
    own = sum(statement_delta(before, client, system.counter).values()) / tasks
    note = (
        f"W={runner.workers}: {tasks} tasks in {elapsed:.2f} s = {tasks / elapsed:.1f}/s "
        f"(submitting took {submitted - started:.2f} s); {total:.1f} statements per task "
        f"over all processes, {own:.1f} of them the client's"
    )
    log(f"  {note}")
    return tasks / elapsed, note


def submit_rates(system: System, tasks: int) -> tuple[float, float]:
    """Submit cost alone: no runner, so nothing competes and nothing is consumed."""
    system.reset()
    with Deadline(max(120.0, tasks / 2), "single submits"):
        started = time.perf_counter()
        for i in range(tasks):
            system.task(i)
        single = tasks / (time.perf_counter() - started)
    system.reset()
    with Deadline(max(120.0, tasks / 2), "batched submit"):
        started = time.perf_counter()
        group = system.task.parallelize([(i,) for i in range(tasks)])
        batch = tasks / (time.perf_counter() - started)
    if len(group.invocations) != tasks:
        raise RuntimeError(f"parallelize returned {len(group.invocations)} invocations")
    system.reset()  # purge
    log(f"  submit: single {single:.0f}/s, batched {batch:.0f}/s")
    return single, batch


def call_and_wait(system: System, i: int) -> None:
    """One trivial invocation, from the call to its result (checked) in the client."""
    value = system.task(i).result
    if value != i:
        raise RuntimeError(f"noop({i}) returned {value!r}")


def round_trips(
    system: System, runner: Runner, calls: int, seed: int, warmup: int = 2
) -> list[float]:
    """``task(i).result`` after an idle gap, in ms; the first ``warmup`` are not kept."""
    rng = random.Random(seed)
    latencies = []
    with runner.deadline(60 + calls * 10, "round trips"):
        for i in range(warmup + calls):
            time.sleep(rng.uniform(0.05, 0.2))
            started = time.perf_counter()
            call_and_wait(system, i)
            if i >= warmup:
                latencies.append((time.perf_counter() - started) * 1000)
    log(
        f"  round trip: p50 {percentile(latencies, 50):.1f} ms, "
        f"p90 {percentile(latencies, 90):.1f} ms over {calls}"
    )
    return latencies


def lifecycle_statements(
    system: System, runner: Runner, calls: int, warmup: int = 5
) -> tuple[Counter[str], float | None]:
    """Statements of every process (client, parent, workers) over back-to-back calls, and
    the new database sessions per call where the server counts them (PostgreSQL).

    Includes what the other, idle worker and the parent execute meanwhile, and the client's
    result polls: the cost of one trivial invocation in a running system.
    """
    with runner.deadline(60 + calls * 10, "lifecycle calls"):
        for i in range(warmup):
            call_and_wait(system, i)
        sessions = system.sessions()  # before the snapshot: not one of the counted
        before = all_counts(system, runner)
        for i in range(calls):
            call_and_wait(system, i)
        after = all_counts(system, runner)
    opened: float | None = None
    if sessions is not None:
        time.sleep(1.0)  # backends report their stats at most once a second
        opened = ((system.sessions() or 0) - sessions) / calls
        log(f"  new database sessions per lifecycle: {opened:.2f}")
    return statement_delta(before, after, system.counter), opened


def per_lifecycle(delta: Counter[str], calls: int) -> tuple[float, float, dict[str, float]]:
    """All statements, those without transaction control, and the top ones, per call."""
    total = sum(delta.values()) / calls
    queries = sum(n for sql, n in delta.items() if not TX_CONTROL.match(sql)) / calls
    breakdown = {sql: round(n / calls, 2) for sql, n in delta.most_common(BREAKDOWN_TOP)}
    log(f"  per lifecycle: {total:.1f} statements, {queries:.1f} without transaction control")
    return total, queries, breakdown


def without_empty_polls(
    system: System, delta: Counter[str], idle: Counter[str], calls: int
) -> str | None:
    """The lifecycle minus the workers' empty polls, for a runner whose idle workers poll
    without sleeping (pynenc's own): its count is otherwise mostly the idle loop.

    Every loop iteration runs the broker's SELECT once; the idle window gives the
    statements of one empty iteration; each call has one successful SELECT, the rest of
    the lifecycle's SELECTs were empty iterations. An estimate, hence a note, not a key.
    """
    if system.poll_marker is None:
        return None
    marker = [sql for sql in idle if system.poll_marker.search(sql)]
    idle_polls = sum(idle[sql] for sql in marker)
    if not idle_polls:
        return None
    empty = max(0.0, sum(delta[sql] for sql in marker) - calls)
    left = Counter({sql: max(0.0, n - empty * idle[sql] / idle_polls) for sql, n in delta.items()})
    total = sum(left.values()) / calls
    queries = sum(n for sql, n in left.items() if not TX_CONTROL.match(sql)) / calls
    connections = sum(n for sql, n in left.items() if sql.startswith("PRAGMA journal_mode")) / calls
    return (
        f"{empty / calls:.0f} empty polls per lifecycle ({idle_polls / max(sum(idle.values()), 1) * 100:.0f} % "
        f"of idle statements are poll markers); without them: {total:.1f} statements, "
        f"{queries:.1f} queries, {connections:.1f} new connections per lifecycle (estimate)"
    )


def idle_rate(
    system: System, runner: Runner, warmup: float, seconds: float
) -> tuple[float, Counter[str]]:
    """Statements/s of the busiest worker, and what every runner process ran meanwhile."""
    assert runner.proc is not None
    time.sleep(warmup)
    before = read_counts(runner.count_dir)
    idle = idle_window(runner.count_dir, runner.proc.pid, seconds, system.counter)
    time.sleep(0.3)
    statements = statement_delta(before, read_counts(runner.count_dir), system.counter)
    log(f"  idle: {idle['worker_max']:.2f} statements/s (busiest worker)")
    return float(idle["worker_max"]), statements


# ---------------------------------------------------------------------------- driver


def measure_run(
    run: int, system: System, args: argparse.Namespace, work: Path, workers: list[int]
) -> tuple[dict[str, Any], list[str]]:
    """One run's entry of the JSON ``runs`` list, and notes about it."""
    log(f"run {run}: end to end, W in {workers}")
    throughput = {}
    notes = []
    for w in workers:
        system.reset()
        with Runner(system, w, work) as runner:
            time.sleep(args.settle_seconds)
            rate, note = end_to_end(system, runner, args.tasks)
            throughput[str(w)] = round(rate, 2)
            notes.append(f"run {run}: end to end {note}")
    log(f"run {run}: submit rates")
    single, batch = submit_rates(system, args.tasks)
    log(f"run {run}: W=2 idle, round trips, statements")
    system.reset()
    with Runner(system, 2, work) as runner:
        idle, idle_statements = idle_rate(
            system, runner, args.idle_warmup_seconds, args.idle_seconds
        )
        latency = round_trips(system, runner, args.latency_calls, args.seed + run)
        delta, sessions = lifecycle_statements(system, runner, args.lifecycle_calls)
    total, queries, breakdown = per_lifecycle(delta, args.lifecycle_calls)
    across = across_hosts(run, system, args, work)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    notes.append(f"run {run}: load average at its end {load} ({os.cpu_count()} cores)")
    if sessions is not None:
        notes.append(
            f"run {run}: {sessions:.2f} new PostgreSQL sessions per lifecycle "
            "(pg_stat_database.sessions of the bench database; CONN_MAX_AGE "
            f"{args.conn_max_age})"
        )
    if estimate := without_empty_polls(system, delta, idle_statements, args.lifecycle_calls):
        log(f"  {estimate}")
        notes.append(f"run {run}: {estimate}")
    entry = {
        "run": run,
        "throughput": throughput,
        "submit_single_per_s": round(single, 1),
        "submit_batch_per_s": round(batch, 1),
        "latency_ms": [round(ms, 2) for ms in latency],
        "statements_per_lifecycle": round(total, 2),
        "queries_per_lifecycle": round(queries, 2),
        "statement_breakdown": breakdown,
        "idle_statements_per_s": round(idle, 3),
        "throughput_1m": None,
        "across_hosts": across,
    }
    return entry, notes


def across_hosts(
    run: int, system: System, args: argparse.Namespace, work: Path
) -> dict[str, Any] | None:
    """MariaDB/MySQL: round trips and statements per lifecycle again, the runner sharing no
    signal files with the client (its own temporary directory, as on another host), so
    only polling finds the work and the results: what a multi-host deployment pays."""
    if getattr(system, "vendor", None) != "mariadb":
        return None
    log(f"run {run}: W=2 round trips and statements, runner as on another host")
    elsewhere = work / f"tmp-elsewhere-{run}"
    elsewhere.mkdir()
    system.reset()
    with Runner(system, 2, work, env={"TMPDIR": str(elsewhere)}) as runner:
        time.sleep(args.settle_seconds)
        latency = round_trips(system, runner, args.latency_calls, args.seed + run)
        delta, _ = lifecycle_statements(system, runner, args.lifecycle_calls)
    total, _, breakdown = per_lifecycle(delta, args.lifecycle_calls)
    return {
        "latency_ms": [round(ms, 2) for ms in latency],
        "statements_per_lifecycle": round(total, 2),
        "statement_breakdown": breakdown,
    }


def measure_million(
    system: System, args: argparse.Namespace, work: Path, runs: list[dict[str, Any]]
) -> list[str]:
    """Seed once, then W=2 end to end per run into its ``throughput_1m``; notes."""
    log(f"million: seeding {args.million:,} invocations")
    system.reset()
    note = system.seed(args.million)
    if note is None:
        return [f"--million: not measured for {system.name} (pynenc_seed is pynenc-django's)"]
    log(f"million: {note}")
    notes = [note]
    for entry in runs:
        # Not reset between runs: each adds its --tasks invocations to the seeded ones.
        with Runner(system, 2, work) as runner:
            time.sleep(args.settle_seconds)
            rate, detail = end_to_end(system, runner, args.tasks)
            entry["throughput_1m"] = {"2": round(rate, 2)}
            notes.append(f"run {entry['run']}: at {args.million:,} seeded, end to end {detail}")
    return notes


def summary(system: System, entry: dict[str, Any]) -> str:
    tp = ", ".join(f"W={w}: {v:.1f}" for w, v in entry["throughput"].items())
    m = entry["throughput_1m"]
    return (
        f"{system.name} run {entry['run']}: end to end {tp} tasks/s"
        + (f" (at 1M: {m['2']:.1f})" if m else "")
        + f"; submit single {entry['submit_single_per_s']:.0f}/s, batched "
        f"{entry['submit_batch_per_s']:.0f}/s; round trip p50 "
        f"{percentile(entry['latency_ms'], 50):.1f} ms; {entry['statements_per_lifecycle']:.1f} "
        f"statements ({entry['queries_per_lifecycle']:.1f} queries)/invocation; idle "
        f"{entry['idle_statements_per_s']:.2f} statements/s per worker"
    )


def method_notes(system: System, args: argparse.Namespace) -> list[str]:
    notes = [
        *(
            [f"CONN_MAX_AGE {args.conn_max_age} (Django's default is 0) in the client and runner"]
            if system.kind == "pynenc-django"
            else []
        ),
        f"{os.cpu_count()} cores shared by the client, the runner and the database server; "
        "other benchmarks and test suites may run concurrently: compare runs of one session",
        "pynenc logging_level=warning in the client and the runner (no INFO line per task)",
        f"end to end: task.parallelize([(i,) for i in range(N)]) then list(group.results) "
        "(group.results calls invocation.result on each invocation once filter_final reports "
        f"it final); the runner restarted per worker count on a fresh database, its workers "
        f"up and idle for {args.settle_seconds:g} s first; every result is checked",
        "submit: no runner running, fresh database each: N task(i) calls one by one, then one "
        "task.parallelize(N) (pynenc's batched route_calls, parallel_batch_size 100)",
        f"round trip: {args.latency_calls} sequential task(i).result calls (+2 unmeasured) "
        f"with W=2 idle, each after a uniform 0.05-0.2 s gap (seed {args.seed}+run)",
        f"statements per lifecycle: {args.lifecycle_calls} back-to-back task(i).result calls "
        "(after 5 unmeasured) with W=2, statements of the client, the runner parent and the "
        "workers summed and divided by the calls (idle polls of the other worker, heartbeats "
        "and the client's result polls included); 'queries' leaves out BEGIN/COMMIT/ROLLBACK/"
        "SAVEPOINT/RELEASE/PRAGMA; statement_breakdown: the top "
        f"{BREAKDOWN_TOP} normalized statements per lifecycle",
        f"idle: busiest of the W=2 workers, {args.idle_seconds:g} s window after "
        f"{args.idle_warmup_seconds:g} s warm-up, nothing submitted",
        "statement counting (bench/benchapp/counting.py) stays on in every process during all "
        "measurements: a few microseconds per statement",
    ]
    if system.kind == "pynenc-django":
        notes.append(
            "pynenc-django's defaults: on PostgreSQL a submit is one statement and so is a "
            "claim, the hot statements are prepared on the server, and a worker's claim and "
            "RUNNING commit without waiting for the WAL flush (django_async_claim_commits; "
            "submissions and final statuses wait for theirs); the runner gives hot tables "
            "never analyzed a first ANALYZE once they have rows (pynenc_django.ops.planner); on "
            "SQLite idle workers and waiting clients watch signal files (inotify) instead of "
            "backing off; on MariaDB the same files end their backoff sleeps early for what "
            "this host enqueues and finishes (the client and the runner share one host here; "
            "across_hosts measures the runner without them)"
        )
        notes.append(
            "statements: every execute through a Django connection (ORM and raw cursors, "
            "savepoints, SQLite's BEGIN IMMEDIATE); not the driver's own BEGIN/COMMIT around "
            "atomic() blocks, not PostgreSQL's raw LISTEN connection (idle: no traffic)"
        )
    else:
        notes.append(
            "statements: every statement SQLite runs in any process (set_trace_callback), "
            "BEGIN/COMMIT and the 5 PRAGMAs per new connection included: compare "
            "queries_per_lifecycle across systems; pynenc's SQLite backend opens a connection "
            "per operation, so PRAGMA journal_mode per lifecycle = connections per lifecycle"
        )
    return notes


def write_result(path: Path, system: System, args: argparse.Namespace, runs: list, notes: list):
    v = versions()
    payload = {
        "system": system.name,
        "label": system.label(),
        "kind": system.kind,
        "database": system.database(),
        "versions": {**v, "sqlite": sqlite3.sqlite_version},
        "settings": {
            "tasks": args.tasks,
            "workers": args.worker_counts,
            "latency_calls": args.latency_calls,
            "runs": args.runs,
            "submit": "parallelize",
            "wait": "invocation.result",
            "million": args.million or None,
        },
        "runs": runs,
        "notes": notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--system", required=True, choices=SYSTEMS)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--tasks", type=int, help="tasks per end-to-end and submit measurement")
    parser.add_argument("--workers", help="comma-separated worker counts, e.g. 1,2,4")
    parser.add_argument("--latency-calls", type=int)
    parser.add_argument("--lifecycle-calls", type=int, help="calls for statements/invocation")
    parser.add_argument("--million", action="store_true", help="also measure at 1M invocations")
    parser.add_argument("--million-count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/raw/)")
    parser.add_argument("--postgres-url", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--mariadb-url", default=DEFAULT_URLS["mariadb"])
    parser.add_argument("--settle-seconds", type=float, default=2.0)
    parser.add_argument("--idle-warmup-seconds", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--conn-max-age", type=int, default=0, help="pynenc-django: CONN_MAX_AGE (Django's 0)"
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if args.million:
        args.million = args.million_count or (MILLION_QUICK if args.quick else MILLION)
    if args.tasks < 2 or args.runs < 1 or not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--tasks must be at least 2, --runs and every worker count at least 1")
    if args.out is None:
        stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
        args.out = RESULTS_DIR / "raw" / f"throughput-{args.system}-{stamp}.json"
    return args


def drop_database(system: System, attempts: int = 5) -> None:
    """Drop the bench database, retrying a while: the server may be restarting (shared)."""
    for attempt in range(1, attempts + 1):
        try:
            system.drop()
            return
        except Exception as exc:
            if attempt == attempts:
                log(f"could not drop the bench database ({DB_NAME}): {exc}")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.system != "pynenc-sqlite" and (target := server_url(args))[0] != "sqlite":
        check_server(*target)  # one clear line and exit 2 when it is down
    work = Path(tempfile.mkdtemp(prefix="pynenc-tp-"))
    system = make_system(args, work)
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    ok = False
    try:
        with terminate_as_interrupt():
            system.setup_client()
            notes = method_notes(system, args)
            log(f"{system.label()}: {args.runs} run(s), {args.tasks} tasks, W {args.worker_counts}")
            for run in range(1, args.runs + 1):
                entry, run_notes = measure_run(run, system, args, work, args.worker_counts)
                runs.append(entry)
                notes += run_notes
                log(summary(system, runs[-1]))
                write_result(args.out, system, args, runs, notes)
            if args.million:
                notes += measure_million(system, args, work, runs)
                for entry in runs:
                    log(summary(system, entry))
            notes.append(f"benchmark wall time {time.monotonic() - started:.0f} s")
            write_result(args.out, system, args, runs, notes)
            ok = True
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        for _ in range(3):  # a late interrupt must not leave the runner behind
            try:
                Runner.kill_all()
                break
            except KeyboardInterrupt:
                continue
        drop_database(system)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work directory kept for inspection: {work}")
    log(f"wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as exc:
        if isinstance(exc.code, str):  # check_server's one-line message
            print(exc.code, file=sys.stderr)
            sys.exit(2)
        raise
