"""Every system of the benchmark, run 1 of each, then run 2 of each..., then the report.

    .venv/bin/python -m bench.bench [--systems pynenc-django-postgresql,procrastinate,...]
        [--runs 3] [--tasks 2000] [--workers 2] [--scaling-workers 1,2,4]
        [--latency-calls 50] [--seed-rows 10000000] [--quick] [--no-tuned] [--no-seeded]
        [--raw-dir DIR] [--out-dir DIR] [--timeout SECONDS]
    .venv/bin/python -m bench.bench --report-only RAW_DIR [--out-dir DIR]

1. Checks that the PostgreSQL, MariaDB and Redis servers answer (TCP) and records the
   machine, the package versions, each server's version and the settings that bound a
   queue's speed; a system whose server is missing is skipped, with the reason.
2. Runs, for each run (``--runs``), one measurement of every selected row, each row's script
   as a subprocess (``bench.throughput`` for the pynenc systems, ``bench.peers.*`` for the
   peers; every one measured by ``bench/harness.py``'s one procedure), strictly one at a
   time (the machine has 2 cores). Interleaved: a slow minute on the machine hits run k of
   every system, not every run of one. Output is streamed and kept in
   ``<raw-dir>/<row>.run<k>.log``; each step writes ``<raw-dir>/<row>.run<k>.json``. A step
   that fails or overruns its timeout is recorded and the run goes on.
3. ``bench/report.py`` aggregates the JSON into ``bench/results/<date>.md`` and its plots in
   ``bench/results/<date>/`` (the day's result: a later run the same day replaces it).

Rows: every system with its defaults; each Django-based one (pynenc-django on three
databases, django-tasks-db) also ``-tuned`` (``CONN_MAX_AGE`` 60 and health checks); and
``pynenc-django-postgresql-seeded`` (end to end with ``--seed-rows`` finished invocations in
the database, seeded once by run 1, dropped after the last run). ``--systems`` takes system
names (each selects its rows) or row names (that row only).

The exit status is non-zero if a step failed or was skipped, or if a budget is not met; the
report is written in every case.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# Run as a script, sys.path[0] is bench/ and ``import bench`` would find this file, not the
# package: put the repository first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.runner_idle_wake import versions  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
RAW_ROOT = RESULTS_DIR / "raw"
FIXTURE_DIR = BENCH_DIR / "tests_fixture"
DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_SIZES: dict[str, Any] = {
    "runs": 3,
    "tasks": 2000,
    "workers": "2",
    "latency_calls": 50,
    "lifecycle_calls": 200,
}
SIZES = {
    "--tasks": "tasks",
    "--workers": "workers",
    "--latency-calls": "latency_calls",
    "--lifecycle-calls": "lifecycle_calls",
}
SCALING_WORKERS = "1,2,4"  # end to end of pynenc-django-postgresql-tuned, full runs only
SEED_ROWS, SEED_ROWS_QUICK = 10_000_000, 20_000
SEEDED_DB = "pynenc_django_bench_seeded"  # bench/throughput.py SEEDED_DB_NAME
PACKAGES = (
    "pynenc",
    "pynenc-django",
    "Django",
    "psycopg",
    "mysqlclient",
    "procrastinate",
    "django-tasks-db",
    "celery",
    "kombu",
    "redis",
    "matplotlib",
)


@dataclass(frozen=True)
class Server:
    """A database server some systems need; the scripts connect with these defaults too."""

    name: str
    host: str
    port: int


SERVERS = {
    "postgresql": Server("PostgreSQL", "127.0.0.1", 5432),
    "mariadb": Server("MariaDB", "127.0.0.1", 3306),
    "redis": Server("Redis", "127.0.0.1", 6379),
}


@dataclass(frozen=True)
class Row:
    """One row of the report: a script, its fixed options, the servers it needs."""

    system: str  # what --systems selects it by
    module: str
    options: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    tuned: bool = False
    seeded: bool = False
    scaling: bool = False  # end to end at --scaling-workers too
    no_flush_wait: bool = False  # a diagnostic: commits without waiting for the WAL flush


def _pynenc(system: str, servers: tuple[str, ...], **kw: Any) -> Row:
    options = ("--system", system) + (("--tuned",) if kw.get("tuned") else ())
    options += ("--seeded",) if kw.get("seeded") else ()
    options += ("--no-flush-wait",) if kw.get("no_flush_wait") else ()
    return Row(system, "bench.throughput", options, servers, **kw)


# Execution order within a run: the headline comparison first and close together (the seeded
# row right after the empty one it is compared with; run 1 seeds it, and seeding ends with a
# CHECKPOINT, so its writes are done before the next step), the tuned rows last.
ROWS = {
    "pynenc-django-postgresql": _pynenc("pynenc-django-postgresql", ("postgresql",)),
    "pynenc-django-postgresql-seeded": _pynenc(
        "pynenc-django-postgresql", ("postgresql",), seeded=True
    ),
    "celery-redis": Row("celery-redis", "bench.peers.celery_bench", servers=("redis",)),
    "procrastinate": Row(
        "procrastinate", "bench.peers.procrastinate_bench", servers=("postgresql",)
    ),
    "django-tasks-db": Row(
        "django-tasks-db", "bench.peers.django_tasks_db_bench", servers=("postgresql",)
    ),
    "pynenc-django-mariadb": _pynenc("pynenc-django-mariadb", ("mariadb",)),
    "pynenc-django-sqlite": _pynenc("pynenc-django-sqlite", ()),
    "pynenc-sqlite": _pynenc("pynenc-sqlite", ()),
    "pynenc-django-postgresql-tuned": _pynenc(
        "pynenc-django-postgresql", ("postgresql",), tuned=True, scaling=True
    ),
    "django-tasks-db-tuned": Row(
        "django-tasks-db",
        "bench.peers.django_tasks_db_bench",
        ("--tuned",),
        ("postgresql",),
        tuned=True,
    ),
    "pynenc-django-mariadb-tuned": _pynenc("pynenc-django-mariadb", ("mariadb",), tuned=True),
    "pynenc-django-sqlite-tuned": _pynenc("pynenc-django-sqlite", (), tuned=True),
    "pynenc-django-postgresql-nowait": _pynenc(
        "pynenc-django-postgresql", ("postgresql",), no_flush_wait=True
    ),
}
SYSTEMS = tuple(dict.fromkeys(r.system for r in ROWS.values()))
assert set(ROWS) == set(report.SYSTEM_ORDER)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- machine, servers


def reachable(server: Server) -> bool:
    try:
        with socket.create_connection((server.host, server.port), timeout=3):
            return True
    except OSError:
        return False


def server_info(key: str, server: Server) -> dict[str, Any]:
    """The server's version and the settings that bound a queue's speed (durability of a
    commit, buffer size, vacuum), asked over the default (passwordless) account."""
    try:
        if key == "postgresql":
            import psycopg

            with psycopg.connect(
                host=server.host,
                port=server.port,
                user="postgres",
                dbname="postgres",
                connect_timeout=5,
            ) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
                names = ("fsync", "synchronous_commit", "autovacuum", "shared_buffers")
                settings = {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}
                return {"version": f"PostgreSQL {version}", "settings": settings}
        if key == "mariadb":
            import MySQLdb

            conn = MySQLdb.connect(
                host=server.host, port=server.port, user="root", connect_timeout=5
            )
            try:
                cursor = conn.cursor()
                cursor.execute(
                    "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog, "
                    "@@log_bin, @@innodb_buffer_pool_size"
                )
                version, flush, sync_binlog, log_bin, pool = cursor.fetchone()
                settings = {
                    "innodb_flush_log_at_trx_commit": flush,
                    "log_bin": log_bin,
                    "sync_binlog": sync_binlog,
                    "innodb_buffer_pool_size": f"{int(pool) // 2**20} MB",
                }
                return {"version": f"MariaDB {version}", "settings": settings}
            finally:
                conn.close()
        if key == "redis":
            import redis

            client = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
            try:
                settings = {}
                for name in ("appendonly", "appendfsync", "save"):
                    with contextlib.suppress(redis.RedisError):
                        settings[name] = client.config_get(name).get(name, "?") or '""'
                version = client.info("server")["redis_version"]
                return {"version": f"Redis {version}", "settings": settings}
            finally:
                client.close()
    except Exception as exc:  # context: report the error, don't stop
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]
        return {"version": f"unknown ({type(exc).__name__}: {first})"}
    return {"version": "unknown"}


def check_servers() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {
        "sqlite": {"reachable": True, "version": f"SQLite {sqlite3.sqlite_version} (Python's)"}
    }
    for key, server in SERVERS.items():
        up = reachable(server)
        address = f"{server.host}:{server.port}"
        out[key] = {"reachable": up, "address": address}
        if up:
            out[key].update(server_info(key, server))
            settings = ", ".join(f"{k} {v}" for k, v in out[key].get("settings", {}).items())
            log(f"{server.name} at {address}: {out[key]['version']} ({settings})")
        else:
            log(f"{server.name} is NOT reachable at {address}")
    return out


def machine_info() -> dict[str, Any]:
    base = versions()  # CPU model, cores, OS, Python (bench/runner_idle_wake.py)
    distro = "–"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip().strip('"')
    packages = {}
    for dist in PACKAGES:
        try:
            packages[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            packages[dist] = "not installed"
    return {
        "cpu": base["cpu"],
        "cores": base["cores"],
        "ram": ram(),
        "os": f"{base['os']} ({platform.machine()})",
        "distro": distro,
        "python": f"{base['python']} ({sys.executable})",
        "packages": packages,
    }


def ram() -> str:
    try:
        import psutil

        return f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "–"


# ---------------------------------------------------------------------------- one step


def size(args: argparse.Namespace, key: str) -> Any:
    value = getattr(args, key)
    return DEFAULT_SIZES[key] if value is None else value


def command(name: str, args: argparse.Namespace, run: int, last: bool, out: Path) -> list[str]:
    row = ROWS[name]
    cmd = [sys.executable, "-m", row.module, *row.options, "--run-index", str(run)]
    for flag, key in SIZES.items():
        # With --quick, each script picks its own quick sizes unless one was given.
        value = getattr(args, key)
        if key == "workers" and row.scaling and args.scaling_workers:
            value = scaled(args)  # end to end only: the other phases run at W=2
        elif value is None and not args.quick:
            value = DEFAULT_SIZES[key]
        if value is not None:
            cmd += [flag, str(value)]
    if row.seeded:
        cmd += ["--seed-rows", str(seed_rows(args))]
        if last and not args.keep_seeded:
            cmd.append("--drop-seeded")
    if args.quick:
        cmd.append("--quick")
    return [*cmd, "--out", str(out)]


def scaled(args: argparse.Namespace) -> str:
    counts = {int(w) for w in str(size(args, "workers")).split(",")}
    counts |= {int(w) for w in str(args.scaling_workers).split(",") if w.strip()}
    return ",".join(str(w) for w in sorted(counts))


def seed_rows(args: argparse.Namespace) -> int:
    if args.seed_rows is not None:
        return int(args.seed_rows)
    return SEED_ROWS_QUICK if args.quick else SEED_ROWS


def default_timeout(name: str, args: argparse.Namespace, run: int) -> float:
    """Generous: 10 minutes, plus every task at 5 tasks/s per measurement, plus 2 s per
    latency call; seeding (run 1 of the seeded row) adds 10 minutes per million. A hung
    step must not hold the run forever, a slow one must not lose its measurement."""
    tasks = int(size(args, "tasks"))
    workers = len(scaled(args).split(",")) if ROWS[name].scaling else 1
    seconds = 600 + 2 * workers * tasks / 5 + 2 * tasks / 5 + 2 * int(size(args, "latency_calls"))
    if ROWS[name].seeded:
        seconds += 600 * max(1.0, seed_rows(args) / 1e6)
    return seconds


def pump(
    stream: IO[str], sink: IO[str], prefix: str, tail: collections.deque, lock: threading.Lock
) -> None:
    """Echo a child's output line by line to the terminal and its log; keep the tail."""
    for line in stream:
        with lock:
            sink.write(line)
            sink.flush()
            tail.append(line.rstrip("\n"))
        print(f"{prefix}{line}", end="", file=sys.stderr, flush=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGTERM to the script and everything it started (its runners may have their own
    session), SIGKILL to what is left after 10 s."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def run_step(
    name: str, run: int, last: bool, args: argparse.Namespace, raw_dir: Path
) -> dict[str, Any]:
    """Run one row's script for one run; what happened, for the manifest (KeyboardInterrupt
    propagates)."""
    stem = f"{name}.run{run}"
    out = raw_dir / f"{stem}.json"
    out.unlink(missing_ok=True)
    cmd = command(name, args, run, last, out)
    timeout = args.timeout or default_timeout(name, args, run)
    log_path = raw_dir / f"{stem}.log"
    entry: dict[str, Any] = {
        "command": shlex.join([Path(cmd[0]).name, *cmd[1:]]),
        "log": log_path.name,
        "timeout": timeout,
    }
    log(f"{name} run {run}: {entry['command']} (timeout {timeout:.0f} s)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: collections.deque[str] = collections.deque(maxlen=25)
    lock = threading.Lock()
    started = time.monotonic()
    with open(log_path, "w") as sink:
        # Own session: a Ctrl-C on the driver is handled here, and kills the whole tree.
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        prefix = f"  {name} #{run} | "
        pumps = [
            threading.Thread(target=pump, args=(s, sink, prefix, tail, lock), daemon=True)
            for s in (proc.stdout, proc.stderr)
        ]
        for t in pumps:
            t.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} run {run}: timed out after {timeout:.0f} s, stopping it")
            kill_tree(proc)
            entry.update(status="timeout", reason=f"timed out after {timeout:.0f} s")
        except KeyboardInterrupt:
            log(f"{name} run {run}: interrupted, stopping it")
            kill_tree(proc)
            entry.update(status="interrupted", reason="interrupted (Ctrl-C)")
            raise
        finally:
            for t in pumps:
                t.join(5)
            entry["seconds"] = time.monotonic() - started
            entry["returncode"] = proc.returncode
            if entry.get("status"):
                entry["error"] = "\n".join(tail)
    if "status" in entry:
        return entry
    problem = check_output(name, out)
    if proc.returncode != 0:
        reason = f"exit code {proc.returncode}"
        if not problem:
            reason += " (its JSON was written and is shown)"
        entry.update(status="failed", reason=reason, error="\n".join(tail))
    elif problem:
        entry.update(status="failed", reason=problem, error="\n".join(tail))
    else:
        entry["status"] = "ok"
    reason = f" ({entry['reason']})" if entry.get("reason") else ""
    log(f"{name} run {run}: {entry['status']}{reason}, {entry['seconds']:.0f} s")
    return entry


def check_output(name: str, out: Path) -> str | None:
    """What is wrong with a script's JSON, or None."""
    if not out.exists():
        return f"no {out.name} written"
    try:
        payload = json.loads(out.read_text())
    except ValueError as exc:
        return f"invalid JSON in {out.name}: {exc}"
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("runs"), list)
        or not payload["runs"]
    ):
        return f"{out.name} has no runs"
    if payload.get("system") != name:
        return f"{out.name} says system {payload.get('system')!r}, expected {name!r}"
    return None


def drop_seeded() -> None:
    """The seeded database, whatever happened (it is large)."""
    with contextlib.suppress(Exception):
        import psycopg

        server = SERVERS["postgresql"]
        with psycopg.connect(
            host=server.host,
            port=server.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{SEEDED_DB}" WITH (FORCE)')


# ---------------------------------------------------------------------------- the run


def archive_earlier(raw_dir: Path) -> None:
    """Move an earlier run's files (same day, same directory) into a subdirectory: the
    report reads only this run's, and nothing measured is deleted."""
    earlier = [p for p in raw_dir.iterdir() if p.is_file()]
    if not earlier:
        return
    stamp = time.strftime("%H%M%S", time.localtime(min(p.stat().st_mtime for p in earlier)))
    dest = raw_dir / f"earlier-{stamp}"
    dest.mkdir(exist_ok=True)
    for path in earlier:
        shutil.move(str(path), dest / path.name)
    log(f"an earlier run's raw files moved to {dest}")


def write_manifest(raw_dir: Path, manifest: dict[str, Any]) -> None:
    path = raw_dir / report.MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(path)


def row_status(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A row over its runs: ok when every run is; else the first failure's reason."""
    bad = {k: v for k, v in steps.items() if v.get("status") != "ok"}
    if not bad:
        return {"status": "ok", "runs": steps}
    run, first = next(iter(bad.items()))
    status = first.get("status", "failed")
    reason = f"run {run}: {first.get('reason', status)}"
    if len(bad) < len(steps):
        status = "partly failed"
    out = {"status": status, "reason": reason, "runs": steps}
    if first.get("error"):
        out["error"] = first["error"]
    return out


def measure(args: argparse.Namespace, argv: list[str]) -> tuple[Path, dict[str, Any], bool]:
    """Run every selected row, run by run; the raw directory, the manifest, interrupted?"""
    started = dt.datetime.now()
    t0 = time.monotonic()
    date = started.date().isoformat()
    raw_dir = (args.raw_dir or RAW_ROOT / date).resolve()
    raw_dir.mkdir(parents=True, exist_ok=True)
    archive_earlier(raw_dir)
    log(f"raw results in {raw_dir}")
    servers = check_servers()
    runs = int(size(args, "runs"))
    manifest: dict[str, Any] = {
        "date": date,
        "started": started.isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.bench", *argv]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": runs,
        "seed_rows": seed_rows(args) if not args.no_seeded else None,
        "machine": machine_info(),
        "servers": servers,
        "systems": {},
    }
    selected = args.rows
    steps: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in selected}
    for name in selected:
        down = [k for k in ROWS[name].servers if not servers[k]["reachable"]]
        if down:
            reason = ", ".join(
                f"{SERVERS[k].name} unreachable at {servers[k]['address']}" for k in down
            )
            manifest["systems"][name] = {"status": "skipped", "reason": reason}
            log(f"{name}: SKIPPED, {reason}")
    todo = [n for n in selected if n not in manifest["systems"]]
    write_manifest(raw_dir, manifest)
    interrupted = False
    try:
        for run in range(1, runs + 1):
            log(f"==== run {run} of {runs}: {', '.join(todo)}")
            for name in todo:
                seeding_failed = ROWS[name].seeded and any(
                    v.get("status") != "ok" for v in steps[name].values()
                )
                if seeding_failed:  # do not seed again and again
                    steps[name][str(run)] = {"status": "not run", "reason": "an earlier run failed"}
                    continue
                try:
                    steps[name][str(run)] = run_step(name, run, run == runs, args, raw_dir)
                finally:
                    manifest["systems"][name] = row_status(steps[name])
                    manifest["wall_seconds"] = time.monotonic() - t0
                    write_manifest(raw_dir, manifest)
    except KeyboardInterrupt:
        interrupted = True
        for name in todo:
            entry = manifest["systems"].setdefault(name, {"status": "not run"})
            if entry.get("status") == "ok" or "runs" not in entry:
                entry.update(status="interrupted", reason="run interrupted")
    finally:
        if any(ROWS[n].seeded for n in todo) and not args.keep_seeded:
            drop_seeded()
    manifest["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    manifest["wall_seconds"] = time.monotonic() - t0
    write_manifest(raw_dir, manifest)
    return raw_dir, manifest, interrupted


def report_date(raw_dir: Path) -> str:
    if date := report.run_date(raw_dir):
        return date
    if DATE_DIR.match(raw_dir.name):
        return raw_dir.name
    return dt.date.today().isoformat()


def select_rows(names: list[str], args: argparse.Namespace) -> list[str]:
    """Rows in execution order: a system name selects its rows, a row name that row."""
    wanted = set()
    for name in names:
        if name in ROWS and name not in SYSTEMS:
            wanted.add(name)
            continue
        for row, spec in ROWS.items():
            skipped = (spec.tuned and args.no_tuned) or (spec.seeded and args.no_seeded)
            if spec.system == name and not skipped:
                wanted.add(row)
    return [row for row in ROWS if row in wanted]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma list of systems ({', '.join(SYSTEMS)}) or rows (default: all)",
    )
    parser.add_argument("--runs", type=int, help="default 3 (interleaved)")
    parser.add_argument("--tasks", type=int, help="N per measurement, default 2000")
    parser.add_argument("--workers", help="worker counts of every row, default 2")
    parser.add_argument(
        "--scaling-workers",
        help=f"also for pynenc-django-postgresql-tuned (default {SCALING_WORKERS}; "
        "none with --quick; '' for none)",
    )
    parser.add_argument("--latency-calls", type=int, help="default 50")
    parser.add_argument("--lifecycle-calls", type=int, help="default 200")
    parser.add_argument(
        "--seed-rows",
        type=int,
        help=f"finished invocations of the seeded row (default {SEED_ROWS:,}; quick "
        f"{SEED_ROWS_QUICK:,})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="passed to every script, with only the sizes given here: each has its quick sizes",
    )
    parser.add_argument("--no-tuned", action="store_true", help="skip the -tuned rows")
    parser.add_argument("--no-seeded", action="store_true", help="skip the seeded row")
    parser.add_argument("--no-million", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--keep-seeded", action="store_true", help=f"do not drop {SEEDED_DB} at the end"
    )
    parser.add_argument("--timeout", type=float, help="seconds per step (default: from the sizes)")
    parser.add_argument("--raw-dir", type=Path, help="default: bench/results/raw/<date>/")
    parser.add_argument(
        "--out-dir", type=Path, default=RESULTS_DIR, help="<date>.md and <date>/*.png go here"
    )
    parser.add_argument(
        "--report-only", type=Path, metavar="RAW_DIR", help="render from existing JSON"
    )
    args = parser.parse_args(argv)
    args.no_seeded = args.no_seeded or args.no_million
    if args.scaling_workers is None:
        args.scaling_workers = "" if args.quick else SCALING_WORKERS
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := sorted(set(names) - set(SYSTEMS) - set(ROWS)):
        parser.error(
            f"unknown system(s): {', '.join(unknown)}; known: {', '.join(SYSTEMS)} "
            f"(or a row: {', '.join(r for r in ROWS if r not in SYSTEMS)})"
        )
    args.rows = select_rows(names, args)
    try:
        counts = [int(w) for w in str(size(args, "workers")).split(",")]
        [int(w) for w in str(args.scaling_workers).split(",") if w.strip()]
    except ValueError:
        parser.error("--workers, --scaling-workers: comma-separated integers")
    if report.HEADLINE_WORKERS not in counts:
        log(f"warning: --workers lacks {report.HEADLINE_WORKERS}; the budgets need it")
    if args.raw_dir and args.raw_dir.resolve().is_relative_to(FIXTURE_DIR):
        parser.error("--raw-dir must not be the fixture directory")
    if args.report_only and not args.report_only.is_dir():
        parser.error(f"--report-only: no directory {args.report_only}")
    return args


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C: the running script's tree is stopped and the report still written."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    if importlib.util.find_spec("matplotlib") is None:
        log("matplotlib is missing: `make bench` installs the bench extra (.[bench,mysql])")
        return 2
    interrupted = False
    if args.report_only:
        raw_dir = args.report_only.resolve()
    else:
        raw_dir, _, interrupted = measure(args, argv)
    if report.is_fake(raw_dir) and args.out_dir.resolve() == RESULTS_DIR:
        log(
            f"{raw_dir} holds fixture data: pass --out-dir (e.g. /tmp/bench-fixture), never bench/results"
        )
        return 2
    date = report_date(raw_dir)
    out_md = args.out_dir / f"{date}.md"
    rendered = report.render(raw_dir, out_md, args.out_dir / date)
    log(f"report: {out_md} ({len(rendered.plots)} plots in {args.out_dir / date})")
    for problem in rendered.problems:
        log(f"NOT MEASURED: {problem}")
    for budget in rendered.failed_budgets:
        log(f"BUDGET NOT MET: {budget.name}: {budget.measured} (target {budget.target})")
    if interrupted:
        return 130
    return 1 if rendered.problems or rendered.failed_budgets else 0


if __name__ == "__main__":
    sys.exit(main())
