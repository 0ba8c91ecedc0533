"""Idle cost and wake-up latency of ``manage.py pynenc_runner`` (DjangoPersistentProcessRunner).

    .venv/bin/python bench/runner_idle_wake.py [--databases sqlite,postgresql,mariadb]
        [--processes 2] [--idle-seconds 30] [--calls 60]

For each database, in a fresh subprocess (Django is set up once per process):

1. drops and recreates the ``pynenc_django_bench`` database (SQLite: a temp file),
   ``manage.py migrate``, and starts ``bench/manage.py pynenc_runner --processes N`` with
   ``PYNENC_BENCH_COUNT_DIR`` set, so every runner process counts the SQL statements its
   Django connections execute (``bench/benchapp/counting.py``);
2. waits until the workers are up, lets the runner settle (``--warmup-seconds``), and
   counts the statements of the parent and of each worker over an idle window
   (``--idle-seconds``, nothing submitted), with their CPU time;
3. calls the trivial task ``stamp`` (returns ``time.time()`` when it starts) ``--calls``
   times, one at a time, after an idle gap drawn from ``--gap-min``..``--gap-max``
   (seeded): wake-up latency = task start - client clock right after ``stamp()``
   returned (routing has committed by then); round trip = from before ``stamp()`` to the
   result read back (the client polls the status every ``--poll-ms``);
4. sends SIGTERM, checks the exit code is 0 and that no runner process (nor database
   session on the bench database) is left.

The reference row runs pynenc 0.4's own PersistentProcessRunner on its built-in SQLite
backend (``bench/pynenc_sqlite_reference.py``), idle only.

Results: ``bench/results/runner-idle-wake-<date>.md`` (and the raw JSON under
``bench/results/raw/``, git-ignored). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MANAGE = BENCH_DIR / "manage.py"
REFERENCE_SCRIPT = BENCH_DIR / "pynenc_sqlite_reference.py"
RESULTS_DIR = BENCH_DIR / "results"
DB_NAME = "pynenc_django_bench"
DATABASES = ("sqlite", "postgresql", "mariadb")
DEFAULT_URLS = {
    "postgresql": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "mariadb": f"mysql://root@127.0.0.1:3306/{DB_NAME}",
}
COUNT_DIR_ENV = "PYNENC_BENCH_COUNT_DIR"
# Transaction control and connection set-up, left out of "queries/s".
TX_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END|PRAGMA)\b", re.I)
TARGET_IDLE_PER_WORKER = 5.0
TARGET_WAKE_P50_MS_POSTGRES = 100.0

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---------------------------------------------------------------------------- processes


def read_counts(directory: Path) -> dict[int, dict[str, Any]]:
    counts = {}
    for path in directory.glob("*.json"):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now; the next read has it
        counts[int(payload["pid"])] = payload
    return counts


def cpu_seconds(pid: int) -> float | None:
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def process_tree(pid: int) -> list[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return [pid]


def alive(pids: list[int]) -> list[int]:
    import psutil

    living = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.append(pid)
        except psutil.Error:
            pass
    return living


def is_worker(payload: dict[str, Any], parent_pid: int) -> bool:
    # pynenc's own runner also has a multiprocessing.Manager child that runs no SQL.
    return payload["ppid"] == parent_pid and not str(payload["name"]).startswith("SyncManager")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_process(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as out:
        # Own session: a Ctrl-C on the benchmark does not reach the runner, and a
        # cleanup can kill the whole group.
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )


def wait_for_workers(
    proc: subprocess.Popen, count_dir: Path, processes: int, log_path: Path, counter: str
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"runner exited with {proc.returncode} before its workers were up:\n"
                + log_tail(log_path)
            )
        counts = read_counts(count_dir)
        workers = [
            c for c in counts.values() if is_worker(c, proc.pid) and c[f"{counter}_total"] > 0
        ]
        if len(workers) >= processes and proc.pid in counts:
            return
        time.sleep(0.2)
    raise RuntimeError("the runner's workers did not come up in 120 s:\n" + log_tail(log_path))


def stop_process(proc: subprocess.Popen, tree: list[int], timeout: float = 60) -> dict[str, Any]:
    """SIGTERM; the exit code, how long it took, and what outlived it."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        returncode: int | None = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        returncode = None
    stop_sec = time.monotonic() - started
    deadline = time.monotonic() + 10
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = alive(tree)
    if returncode is None or leftovers:
        kill_group(proc)
    return {"exit_code": returncode, "stop_sec": stop_sec, "leftover_pids": leftovers}


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


# ---------------------------------------------------------------------------- idle window


def snapshot(count_dir: Path, pids: list[int]) -> dict[str, Any]:
    return {
        "counts": read_counts(count_dir),
        "cpu": {pid: cpu_seconds(pid) for pid in pids},
        "t": time.monotonic(),
    }


def idle_window(count_dir: Path, parent_pid: int, seconds: float, counter: str) -> dict[str, Any]:
    """Statements (and CPU) per second of the parent and of each worker over the window.

    ``counter`` is ``django`` (statements through Django cursors) or ``engine`` (every
    statement SQLite runs, pynenc's own SQLite backend).
    """
    pids = process_tree(parent_pid)
    before = snapshot(count_dir, pids)
    time.sleep(seconds)
    after = snapshot(count_dir, pids)
    wall = after["t"] - before["t"]
    per_process = []
    for pid, end in sorted(after["counts"].items()):
        start = before["counts"].get(pid)
        if start is None or (pid != parent_pid and not is_worker(end, parent_pid)):
            continue
        elapsed = end["t"] - start["t"]
        sql_delta = {
            sql: end[counter].get(sql, 0) - start[counter].get(sql, 0) for sql in end[counter]
        }
        sql_delta = {sql: n for sql, n in sql_delta.items() if n}
        total = sum(sql_delta.values())
        queries = sum(n for sql, n in sql_delta.items() if not TX_CONTROL.match(sql))
        cpu0, cpu1 = before["cpu"].get(pid), after["cpu"].get(pid)
        entry = {
            "pid": pid,
            "role": "parent" if pid == parent_pid else "worker",
            "name": end["name"],
            "elapsed": elapsed,
            "statements": total,
            "statements_per_sec": total / elapsed,
            "queries_per_sec": queries / elapsed,
            "cpu_percent": None if cpu0 is None or cpu1 is None else 100 * (cpu1 - cpu0) / wall,
            "sql": sql_delta,
        }
        if counter == "django":
            engine = sum(end["engine"].values()) - sum(start["engine"].values())
            entry["engine_per_sec"] = engine / elapsed if end["engine"] else None
        per_process.append(entry)
    workers = [p for p in per_process if p["role"] == "worker"]
    parent = next((p for p in per_process if p["role"] == "parent"), None)
    if not workers or parent is None:
        raise RuntimeError(f"no counts for the parent or the workers in {count_dir}")

    def top(entries: list[dict[str, Any]], divide_by: int) -> list[tuple[float, str]]:
        merged: dict[str, float] = {}
        for entry in entries:
            for sql, n in entry["sql"].items():
                merged[sql] = merged.get(sql, 0) + n / entry["elapsed"] / divide_by
        return sorted(((rate, sql) for sql, rate in merged.items()), reverse=True)[:10]

    def mean(key: str) -> float | None:
        values = [w[key] for w in workers if w.get(key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "seconds": wall,
        "workers": len(workers),
        "worker_max": max(w["statements_per_sec"] for w in workers),
        "worker_mean": mean("statements_per_sec"),
        "worker_queries_max": max(w["queries_per_sec"] for w in workers),
        "worker_engine_max": max((w.get("engine_per_sec") or 0) for w in workers) or None,
        "worker_cpu_max": max((w["cpu_percent"] or 0) for w in workers),
        "parent": parent["statements_per_sec"],
        "parent_queries": parent["queries_per_sec"],
        "parent_engine": parent.get("engine_per_sec"),
        "parent_cpu": parent["cpu_percent"],
        "top_worker_sql": top(workers, len(workers)),
        "top_parent_sql": top([parent], 1),
        "processes": [{k: v for k, v in p.items() if k != "sql"} for p in per_process],
    }


# ---------------------------------------------------------------------------- wake-up


def wake_latency(args: argparse.Namespace) -> dict[str, Any]:
    from bench.benchapp.tasks import stamp
    from pynenc_django import app

    rng = random.Random(args.seed)
    wake, roundtrip, enqueue, calls = [], [], [], []
    for i in range(args.warmup_calls + args.calls):
        time.sleep(rng.uniform(args.gap_min, args.gap_max))
        t0 = time.time()
        invocation = stamp()
        t1 = time.time()
        while True:
            status = app.orchestrator.get_invocation_status(invocation.invocation_id)
            if status.is_final():
                break
            if time.time() - t0 > 60:
                raise RuntimeError(f"call {i}: still {status} after 60 s")
            time.sleep(args.poll_ms / 1000)
        invocation.update_status_cache(status)
        started = invocation.result
        t2 = time.time()
        if i >= args.warmup_calls:
            wake.append((started - t1) * 1000)
            roundtrip.append((t2 - t0) * 1000)
            enqueue.append((t1 - t0) * 1000)
            calls.append({"t0": t0, "t1": t1, "started": started, "t2": t2})
    return {
        "calls": len(wake),
        "wake_ms": wake,
        "wake_p50": percentile(wake, 50),
        "wake_p99": percentile(wake, 99),
        "wake_max": max(wake),
        "wake_min": min(wake),
        "roundtrip_p50": percentile(roundtrip, 50),
        "roundtrip_p99": percentile(roundtrip, 99),
        "enqueue_p50": percentile(enqueue, 50),
        "enqueue_p99": percentile(enqueue, 99),
        "timings": calls,
    }


def statements_per_call(
    before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]], parent_pid: int, calls: int
) -> dict[str, float]:
    """Statements the runner executed during the calls phase, per call (idle polls included)."""
    totals = {"workers": 0.0, "parent": 0.0}
    for pid, end in after.items():
        start = before.get(pid)
        if start is None:
            continue
        role = "parent" if pid == parent_pid else "workers" if is_worker(end, parent_pid) else None
        if role:
            totals[role] += (end["django_total"] - start["django_total"]) / calls
    return totals


def call_timeline(
    counts: dict[int, dict[str, Any]], parent_pid: int, latency: dict[str, Any]
) -> dict[str, Any] | None:
    """What the runner executed during one call: the one of the last ten calls whose
    wake-up latency is closest to the median (older ones left the ring buffers)."""
    timings = latency["timings"][-10:]
    if not timings:
        return None
    median = percentile([(c["started"] - c["t1"]) * 1000 for c in timings], 50)
    call = min(timings, key=lambda c: abs((c["started"] - c["t1"]) * 1000 - median))
    events = []
    for pid, payload in counts.items():
        if pid != parent_pid and not is_worker(payload, parent_pid):
            continue
        who = "parent" if pid == parent_pid else f"worker {pid}"
        for started, duration, sql in payload.get("recent", []):
            if call["t0"] - 0.005 <= started <= call["t2"] + 0.005:
                events.append((started, duration, who, sql))
    marks = [
        (call["t0"], 0.0, "client", "-- stamp() called"),
        (call["t1"], 0.0, "client", "-- stamp() returned (enqueue committed)"),
        (call["started"], 0.0, "task", "-- task function started"),
        (call["t2"], 0.0, "client", "-- result read back"),
    ]
    rows = sorted(events + marks)
    return {
        "wake_ms": (call["started"] - call["t1"]) * 1000,
        "rows": [
            {"offset_ms": (t - call["t1"]) * 1000, "ms": d * 1000, "who": w, "sql": q}
            for t, d, w, q in rows
        ],
    }


# ---------------------------------------------------------------------------- databases


def database_url(db: str, args: argparse.Namespace) -> str:
    return {"postgresql": args.postgres_url, "mariadb": args.mariadb_url}.get(db, "")


def server_params(url: str) -> dict[str, Any]:
    import dj_database_url

    return dj_database_url.parse(url)


def recreate_database(db: str, url: str, sqlite_path: Path, drop_only: bool = False) -> None:
    """Our own database on the shared server, from scratch."""
    if db == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
        return
    params = server_params(url)
    name = params["NAME"]
    if db == "postgresql":
        import psycopg

        with psycopg.connect(
            host=params["HOST"],
            port=params["PORT"] or 5432,
            user=params["USER"],
            password=params["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop_only:
                conn.execute(f'CREATE DATABASE "{name}"')
        return
    import MySQLdb

    conn = MySQLdb.connect(
        host=params["HOST"],
        port=int(params["PORT"] or 3306),
        user=params["USER"],
        password=params["PASSWORD"] or "",
    )
    try:
        cursor = conn.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        if not drop_only:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        conn.close()


def server_version(db: str) -> str:
    from django.db import connection

    if db == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with connection.cursor() as cursor:
        if db == "postgresql":
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0]}"
        cursor.execute("SELECT VERSION()")
        return f"MariaDB/MySQL {cursor.fetchone()[0]}"


def other_sessions(db: str) -> int | None:
    """Sessions on the bench database other than ours (after the runner stopped)."""
    from django.db import connection

    if db == "sqlite":
        return None
    with connection.cursor() as cursor:
        if db == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            cursor.execute(
                "SELECT count(*) FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
        return int(cursor.fetchone()[0])


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYNENC__") and k not in (COUNT_DIR_ENV, "DATABASE_URL")
    }
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- measurements


def measure_django(db: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One database, in this (fresh) process: the client sets Django up itself."""
    url = database_url(db, args)
    sqlite_path = work / f"{DB_NAME}.sqlite3"
    django_env = {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_DATABASE_URL": url,
        "BENCH_SQLITE_PATH": str(sqlite_path),
        "BENCH_CONN_MAX_AGE": str(args.conn_max_age),
    }
    env = child_env(django_env)
    log(f"{db}: recreating database {DB_NAME} and migrating")
    recreate_database(db, url, sqlite_path)
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "--noinput", "-v", "0"],
        env=env,
        check=True,
        cwd=REPO,
    )
    os.environ.update(django_env)
    os.environ.pop(COUNT_DIR_ENV, None)
    os.environ["PYNENC__LOGGING_LEVEL"] = "warning"  # the client's own logging only
    import django

    django.setup()
    from django.db import connection

    version = server_version(db)
    connection.close()

    count_dir = work / f"counts-{db}"
    count_dir.mkdir()
    log_path = work / f"runner-{db}.log"
    cmd = [sys.executable, str(MANAGE), "pynenc_runner", "--processes", str(args.processes)]
    proc = start_process(cmd, {**env, COUNT_DIR_ENV: str(count_dir)}, log_path)
    result: dict[str, Any] = {"database": db, "server": version, "runner": "django"}
    try:
        log(f"{db}: runner pid {proc.pid} started, waiting for {args.processes} workers")
        wait_for_workers(proc, count_dir, args.processes, log_path, "django")
        tree = process_tree(proc.pid)
        log(f"{db}: workers up; warming up {args.warmup_seconds:g} s")
        time.sleep(args.warmup_seconds)
        log(f"{db}: idle window {args.idle_seconds:g} s")
        result["idle"] = idle_window(count_dir, proc.pid, args.idle_seconds, "django")
        log(
            f"{db}: idle statements/s per worker max {result['idle']['worker_max']:.2f}, "
            f"parent {result['idle']['parent']:.2f}; "
            f"{args.calls} calls (+{args.warmup_calls} warm-up)"
        )
        before_calls = read_counts(count_dir)
        result["latency"] = wake_latency(args)
        time.sleep(0.5)  # let every process dump its counts
        after_calls = read_counts(count_dir)
        result["per_call"] = statements_per_call(
            before_calls, after_calls, proc.pid, result["latency"]["calls"]
        )
        result["timeline"] = call_timeline(after_calls, proc.pid, result["latency"])
        log(
            f"{db}: wake-up p50 {result['latency']['wake_p50']:.1f} ms, "
            f"p99 {result['latency']['wake_p99']:.1f} ms; stopping the runner"
        )
        tree = sorted(set(tree) | set(process_tree(proc.pid)))
        result["stop"] = stop_process(proc, tree)
        result["stop"]["other_db_sessions"] = other_sessions(db)
        result["runner_log_tail"] = log_tail(log_path, 5)
    finally:
        if proc.poll() is None:
            kill_group(proc)
        connection.close()
    if not args.keep_db:
        recreate_database(db, url, sqlite_path, drop_only=True)
    return result


def measure_reference(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """pynenc's PersistentProcessRunner on pynenc's SQLite backend, idle only."""
    count_dir = work / "counts-reference"
    count_dir.mkdir()
    log_path = work / "runner-reference.log"
    db_path = work / "pynenc_reference.sqlite3"
    cmd = [sys.executable, str(REFERENCE_SCRIPT), str(db_path), str(args.processes)]
    proc = start_process(cmd, child_env({COUNT_DIR_ENV: str(count_dir)}), log_path)
    result: dict[str, Any] = {
        "database": "sqlite",
        "server": f"SQLite {sqlite3.sqlite_version}",
        "runner": "pynenc-reference",
    }
    try:
        log(f"reference: pynenc PersistentProcessRunner pid {proc.pid}, waiting for workers")
        wait_for_workers(proc, count_dir, args.processes, log_path, "engine")
        tree = process_tree(proc.pid)
        time.sleep(args.reference_warmup_seconds)
        log(f"reference: idle window {args.reference_seconds:g} s")
        result["idle"] = idle_window(count_dir, proc.pid, args.reference_seconds, "engine")
        log(f"reference: idle statements/s per worker max {result['idle']['worker_max']:.0f}")
        result["stop"] = stop_process(proc, sorted(set(tree) | set(process_tree(proc.pid))))
        result["runner_log_tail"] = log_tail(log_path, 5)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    return result


# ---------------------------------------------------------------------------- reporting


def versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": version("Django"),
        "pynenc": version("pynenc"),
        "pynenc-django": version("pynenc-django"),
        "psycopg": version("psycopg"),
        "mysqlclient": version("mysqlclient"),
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def label(result: dict[str, Any]) -> str:
    if result["runner"] == "pynenc-reference":
        return "pynenc 0.4 PersistentProcessRunner, pynenc SQLite backend (reference)"
    return f"DjangoPersistentProcessRunner, {result['database']}"


def summary_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| runner, database | idle stmts/s per worker (max / mean) "
        "| idle queries/s per worker (max) | idle stmts/s parent "
        "| idle CPU per worker (max) | wake-up p50 / p99 / max (ms) | round trip p50 / p99 (ms) "
        "| exit code | leftover processes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        idle, lat, stop = r["idle"], r.get("latency"), r["stop"]
        lines.append(
            f"| {label(r)} | {fmt(idle['worker_max'], 2)} / {fmt(idle['worker_mean'], 2)} "
            f"| {fmt(idle['worker_queries_max'], 2)} | {fmt(idle['parent'], 2)} | {fmt(idle['worker_cpu_max'])} % "
            + (
                f"| {fmt(lat['wake_p50'])} / {fmt(lat['wake_p99'])} / {fmt(lat['wake_max'])} "
                f"| {fmt(lat['roundtrip_p50'])} / {fmt(lat['roundtrip_p99'])} "
                if lat
                else "| not measured | not measured "
            )
            + f"| {stop['exit_code']} | {len(stop['leftover_pids']) or 'none'} |"
        )
    return lines


def detail_section(r: dict[str, Any], args: argparse.Namespace) -> list[str]:
    idle, lat, stop = r["idle"], r.get("latency"), r["stop"]
    counter = (
        "every statement SQLite runs (set_trace_callback)"
        if r["runner"] == "pynenc-reference"
        else "statements through Django cursors (execute_wrapper)"
    )
    rows = [
        ("server", r["server"]),
        ("counter", counter),
        (
            "idle window",
            f"{idle['seconds']:.1f} s, {idle['workers']} workers (after "
            f"{args.reference_warmup_seconds if r['runner'] == 'pynenc-reference' else args.warmup_seconds:g} s warm-up)",
        ),
        (
            "idle statements/s per worker, max / mean",
            f"{fmt(idle['worker_max'], 2)} / {fmt(idle['worker_mean'], 2)}",
        ),
        (
            "idle queries/s per worker, max (no BEGIN/COMMIT/SAVEPOINT/PRAGMA)",
            fmt(idle["worker_queries_max"], 2),
        ),
    ]
    if idle.get("worker_engine_max"):
        rows.append(
            (
                "idle SQLite engine statements/s per worker, max (incl. BEGIN/COMMIT)",
                fmt(idle["worker_engine_max"], 2),
            )
        )
    rows += [
        ("idle statements/s, parent", fmt(idle["parent"], 2)),
        ("idle queries/s, parent", fmt(idle["parent_queries"], 2)),
        (
            "idle CPU, worker max / parent",
            f"{fmt(idle['worker_cpu_max'])} % / {fmt(idle['parent_cpu'])} %",
        ),
    ]
    if lat:
        rows += [
            ("calls measured", str(lat["calls"])),
            (
                "wake-up latency p50 / p99 / max (min) ms",
                f"{fmt(lat['wake_p50'])} / {fmt(lat['wake_p99'])} / {fmt(lat['wake_max'])} "
                f"({fmt(lat['wake_min'])})",
            ),
            (
                "round trip p50 / p99 ms",
                f"{fmt(lat['roundtrip_p50'])} / {fmt(lat['roundtrip_p99'])}",
            ),
            (
                "enqueue (`stamp()` call) p50 / p99 ms",
                f"{fmt(lat['enqueue_p50'])} / {fmt(lat['enqueue_p99'])}",
            ),
        ]
    if r.get("per_call"):
        rows.append(
            (
                "runner statements per call, workers / parent (calls phase, idle polls included)",
                f"{fmt(r['per_call']['workers'])} / {fmt(r['per_call']['parent'])}",
            )
        )
    rows += [
        ("SIGTERM → exit", f"exit code {stop['exit_code']} after {stop['stop_sec']:.2f} s"),
        ("leftover processes", ", ".join(map(str, stop["leftover_pids"])) or "none"),
    ]
    if stop.get("other_db_sessions") is not None:
        rows.append(("leftover sessions on the bench database", str(stop["other_db_sessions"])))
    lines = [f"### {label(r)}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "Idle window, statements/s per worker (mean over workers), by statement:", ""]
    lines += ["| /s | statement |", "|---:|---|"]
    lines += [f"| {rate:,.2f} | `{sql}` |" for rate, sql in idle["top_worker_sql"]]
    lines += ["", "Idle window, statements/s of the parent, by statement:", ""]
    lines += ["| /s | statement |", "|---:|---|"]
    lines += [f"| {rate:,.2f} | `{sql}` |" for rate, sql in idle["top_parent_sql"]]
    if timeline := r.get("timeline"):
        lines += [
            "",
            f"One call (wake-up {timeline['wake_ms']:.1f} ms, the median of the last ten): "
            "what the runner executed, times relative to `stamp()` returning:",
            "",
            "| at ms | took ms | process | statement |",
            "|---:|---:|---|---|",
        ]
        lines += [
            f"| {row['offset_ms']:+.1f} | {row['ms']:.1f} | {row['who']} | `{row['sql'][:110]}` |"
            for row in timeline["rows"]
        ]
    return [*lines, ""]


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        if r["runner"] != "django":
            continue
        idle_ok = r["idle"]["worker_max"] <= TARGET_IDLE_PER_WORKER
        lines.append(
            f"- {r['database']}: idle {r['idle']['worker_max']:.2f} statements/s per worker "
            f"(target ≤ {TARGET_IDLE_PER_WORKER:g}): {'met' if idle_ok else '**not met**'}"
        )
        if r["database"] == "postgresql":
            ok = r["latency"]["wake_p50"] <= TARGET_WAKE_P50_MS_POSTGRES
            lines.append(
                f"- postgresql: wake-up p50 {r['latency']['wake_p50']:.1f} ms "
                f"(target ≤ {TARGET_WAKE_P50_MS_POSTGRES:g} ms): {'met' if ok else '**not met**'}"
            )
        if r["stop"]["exit_code"] != 0 or r["stop"]["leftover_pids"]:
            lines.append(f"- {r['database']}: **runner did not stop cleanly**: {r['stop']}")
    return lines


def render(results: list[dict[str, Any]], args: argparse.Namespace, date: str) -> str:
    v = versions()
    servers = ", ".join(dict.fromkeys(r["server"] for r in results))
    lines = [
        f"# Runner idle cost and wake-up latency, {date}",
        "",
        "Produced by `bench/runner_idle_wake.py` (see `bench/README.md` for the method).",
        "",
        f"- Machine: {v['cores']} cores ({v['cpu']}), {v['os']}; other test suites may "
        "share the machine and the database servers, so expect noise",
        f"- Python {v['python']}, Django {v['django']}, pynenc {v['pynenc']}, "
        f"pynenc-django {v['pynenc-django']}, psycopg {v['psycopg']}, "
        f"mysqlclient {v['mysqlclient']}",
        f"- Database servers: {servers}",
        f"- Runner: `manage.py pynenc_runner --processes {args.processes}`, pynenc-django "
        "defaults (runner_loop_sleep_time_sec 0.1, django_idle_wait_max_sec 1.0, "
        "django_heartbeat_interval_sec 5, atomic_service_check_interval_minutes 0.5), "
        f"CONN_MAX_AGE {args.conn_max_age}",
        f"- Idle: {args.warmup_seconds:g} s warm-up then a {args.idle_seconds:g} s window, "
        "nothing submitted",
        f"- Wake-up: {args.calls} sequential calls (+{args.warmup_calls} unmeasured), idle gap "
        f"{args.gap_min:g}–{args.gap_max:g} s before each (seed {args.seed}), status polled "
        f"every {args.poll_ms:g} ms for the round trip",
        "",
        "## Summary",
        "",
        *summary_table(results),
        "",
        "Targets:",
        "",
        *verdicts(results),
        "",
        "## Details",
        "",
    ]
    for r in results:
        lines += detail_section(r, args)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default=",".join(DATABASES))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--warmup-seconds", type=float, default=10)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--warmup-calls", type=int, default=2)
    parser.add_argument("--gap-min", type=float, default=0.3)
    parser.add_argument("--gap-max", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--poll-ms", type=float, default=5)
    parser.add_argument("--conn-max-age", type=int, default=0, help="CONN_MAX_AGE (Django's 0)")
    parser.add_argument("--postgres-url", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--mariadb-url", default=DEFAULT_URLS["mariadb"])
    parser.add_argument("--no-reference", action="store_true", help="skip pynenc's own runner")
    parser.add_argument("--reference-seconds", type=float, default=10)
    parser.add_argument("--reference-warmup-seconds", type=float, default=5)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench databases")
    parser.add_argument("--output", type=Path, help="markdown file (default: bench/results/)")
    parser.add_argument("--_measure", dest="measure", help=argparse.SUPPRESS)
    parser.add_argument("--_out", dest="out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.databases.split(",")) - set(DATABASES)
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.measure:  # the per-database subprocess
        work = Path(tempfile.mkdtemp(prefix=f"pynenc-bench-{args.measure}-"))
        try:
            args.out.write_text(json.dumps(measure_django(args.measure, args, work)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0

    results = []
    failures = []
    with tempfile.TemporaryDirectory(prefix="pynenc-bench-") as tmp:
        work = Path(tmp)
        for db in args.databases.split(","):
            out = work / f"{db}.json"
            proc = subprocess.run(
                [sys.executable, __file__, *argv, "--_measure", db, "--_out", str(out)], cwd=REPO
            )
            if proc.returncode != 0 or not out.exists():
                failures.append(db)
                log(f"{db}: measurement failed (exit code {proc.returncode})")
                continue
            results.append(json.loads(out.read_text()))
        if not args.no_reference:
            try:
                results.append(measure_reference(args, work))
            except Exception as exc:  # the reference is context, not the subject
                failures.append("reference")
                log(f"reference: failed: {exc}")
    if not results:
        return 1
    date = dt.date.today().isoformat()
    report = render(results, args, date)
    output = args.output or RESULTS_DIR / f"runner-idle-wake-{date}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    raw = RESULTS_DIR / "raw" / f"runner-idle-wake-{date}-{time.strftime('%H%M%S')}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"args": vars(args) | {"output": str(output)}, "results": results}))
    print(report)
    log(f"results written to {output} (raw: {raw})")
    if failures:
        log(f"failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
