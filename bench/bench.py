"""Every measurement of the benchmark suite, one after the other, then the report (``make bench``).

    .venv/bin/python -m bench.bench [--systems pynenc-django-postgresql,procrastinate,...]
        [--runs 3] [--tasks 2000] [--workers 1,2,4] [--latency-calls 50] [--quick]
        [--no-million] [--raw-dir DIR] [--out-dir DIR] [--timeout SECONDS]
    .venv/bin/python -m bench.bench --report-only RAW_DIR [--out-dir DIR]

1. Checks that the PostgreSQL, MariaDB and Redis servers answer (TCP) and records the
   machine, the package versions and each server's version; a system whose server is
   missing is skipped, with the reason in the report.
2. Runs each system's measurement script (``bench.throughput --system S`` for pynenc-django
   and the reference, ``bench.peers.*`` for the peers) as a subprocess, strictly one at a
   time: the machine has 2 cores, and two measurements at once would measure each other.
   Their output is streamed and kept in ``<raw-dir>/<system>.log``; each writes
   ``<raw-dir>/<system>.json``. A system that fails or overruns its timeout is recorded and
   the run goes on.
3. ``bench/report.py`` aggregates the JSON into ``bench/results/<date>.md`` and its plots
   in ``bench/results/<date>/`` (the day's result: a later run the same day replaces it).

The exit status is non-zero if a system failed or was skipped, or if a budget is not met.
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
DEFAULT_SIZES: dict[str, Any] = {"runs": 3, "tasks": 2000, "workers": "1,2,4", "latency_calls": 50}
SIZES = {
    "--runs": "runs",
    "--tasks": "tasks",
    "--workers": "workers",
    "--latency-calls": "latency_calls",
}
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
class System:
    """How to measure one system: its script, and the servers it cannot run without."""

    module: str
    servers: tuple[str, ...] = ()
    takes_system: bool = False  # bench.throughput measures several systems: --system S
    million: bool = False  # --million unless --no-million
    extra: tuple[str, ...] = ()  # fixed options of this system's script


# Django's default CONN_MAX_AGE (0) reconnects after every task, as after every request;
# both Django-based queues are measured as deployed, with persistent connections.
DJANGO_WORKER = ("--conn-max-age", "60")


# Execution order. The 1M seeding goes last: its writes (checkpoints, autovacuum) would
# otherwise disturb the PostgreSQL peers measured after it.
SYSTEMS = {
    "pynenc-sqlite": System("bench.throughput", takes_system=True),
    "pynenc-django-sqlite": System("bench.throughput", takes_system=True, extra=DJANGO_WORKER),
    "pynenc-django-mariadb": System(
        "bench.throughput", ("mariadb",), takes_system=True, extra=DJANGO_WORKER
    ),
    "procrastinate": System("bench.peers.procrastinate_bench", ("postgresql",)),
    "django-tasks-db": System(
        "bench.peers.django_tasks_db_bench", ("postgresql",), extra=DJANGO_WORKER
    ),
    "celery-redis": System("bench.peers.celery_bench", ("redis",)),
    "pynenc-django-postgresql": System(
        "bench.throughput", ("postgresql",), takes_system=True, million=True, extra=DJANGO_WORKER
    ),
}
assert set(SYSTEMS) == set(report.SYSTEM_ORDER)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- machine, servers


def reachable(server: Server) -> bool:
    try:
        with socket.create_connection((server.host, server.port), timeout=3):
            return True
    except OSError:
        return False


def server_version(key: str, server: Server) -> str:
    """The server's own version string, asked over the default (passwordless) account."""
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
                # What bounds a queue's throughput and what its tables become over a run.
                settings = ", ".join(
                    f"{name} {conn.execute(f'SHOW {name}').fetchone()[0]}"
                    for name in ("fsync", "synchronous_commit", "autovacuum")
                )
                return f"PostgreSQL {version} ({settings})"
        if key == "mariadb":
            import MySQLdb

            conn = MySQLdb.connect(
                host=server.host, port=server.port, user="root", connect_timeout=5
            )
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit")
                version, flush = cursor.fetchone()
                return f"MariaDB {version} (innodb_flush_log_at_trx_commit {flush})"
            finally:
                conn.close()
        if key == "redis":
            import redis

            client = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
            try:
                return f"Redis {client.info('server')['redis_version']}"
            finally:
                client.close()
    except Exception as exc:  # a version is context: report the error, don't stop
        return f"unknown ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:100]})"
    return "unknown"


def check_servers() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {
        "sqlite": {"reachable": True, "version": f"SQLite {sqlite3.sqlite_version} (Python's)"}
    }
    for key, server in SERVERS.items():
        up = reachable(server)
        address = f"{server.host}:{server.port}"
        out[key] = {"reachable": up, "address": address}
        if up:
            out[key]["version"] = server_version(key, server)
            log(f"{server.name} at {address}: {out[key]['version']}")
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


# ---------------------------------------------------------------------------- one system


def size(args: argparse.Namespace, key: str) -> Any:
    value = getattr(args, key)
    return DEFAULT_SIZES[key] if value is None else value


def command(name: str, args: argparse.Namespace, out: Path) -> list[str]:
    spec = SYSTEMS[name]
    cmd = [sys.executable, "-m", spec.module]
    if spec.takes_system:
        cmd += ["--system", name]
    for flag, key in SIZES.items():
        # With --quick, each script picks its own quick sizes unless one was given.
        if getattr(args, key) is not None or not args.quick:
            cmd += [flag, str(size(args, key))]
    cmd += [*spec.extra, "--out", str(out)]
    if spec.million and not args.no_million:
        cmd.append("--million")
    if args.quick:
        cmd.append("--quick")
    return cmd


def default_timeout(name: str, args: argparse.Namespace) -> float:
    """Generous: 10 minutes, plus every task at 5 tasks/s, plus 1 s per latency call; the
    1M seeding adds an hour. A hung script must not hold the run forever, a slow one must
    not lose its measurement."""
    workers = len(str(size(args, "workers")).split(","))
    runs, tasks = size(args, "runs"), size(args, "tasks")
    seconds = 600 + runs * (workers * tasks / 5 + size(args, "latency_calls"))
    if SYSTEMS[name].million and not args.no_million:
        seconds += 3600
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


def run_system(name: str, args: argparse.Namespace, raw_dir: Path) -> dict[str, Any]:
    """Run one script; what happened, for the manifest (KeyboardInterrupt propagates)."""
    out = raw_dir / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = command(name, args, out)
    timeout = args.timeout or default_timeout(name, args)
    log_path = raw_dir / f"{name}.log"
    entry: dict[str, Any] = {
        "command": shlex.join([Path(cmd[0]).name, *cmd[1:]]),
        "log": log_path.name,
        "timeout": timeout,
    }
    log(f"{name}: {entry['command']} (timeout {timeout:.0f} s)")
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
        prefix = f"  {name} | "
        pumps = [
            threading.Thread(target=pump, args=(s, sink, prefix, tail, lock), daemon=True)
            for s in (proc.stdout, proc.stderr)
        ]
        for t in pumps:
            t.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name}: timed out after {timeout:.0f} s, stopping it")
            kill_tree(proc)
            entry.update(status="timeout", reason=f"timed out after {timeout:.0f} s")
        except KeyboardInterrupt:
            log(f"{name}: interrupted, stopping it")
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
    log(
        f"{name}: {entry['status']}{' (' + entry['reason'] + ')' if entry.get('reason') else ''}, {entry['seconds']:.0f} s"
    )
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


def measure(args: argparse.Namespace, argv: list[str]) -> tuple[Path, dict[str, Any], bool]:
    """Run every selected system; the raw directory, the manifest, and whether interrupted."""
    started = dt.datetime.now()
    t0 = time.monotonic()
    date = started.date().isoformat()
    raw_dir = (args.raw_dir or RAW_ROOT / date).resolve()
    raw_dir.mkdir(parents=True, exist_ok=True)
    archive_earlier(raw_dir)
    log(f"raw results in {raw_dir}")
    servers = check_servers()
    manifest: dict[str, Any] = {
        "date": date,
        "started": started.isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.bench", *argv]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(),
        "servers": servers,
        "systems": {},
    }
    selected = [s for s in SYSTEMS if s in args.systems]
    for name in selected:
        down = [k for k in SYSTEMS[name].servers if not servers[k]["reachable"]]
        if down:
            reason = ", ".join(
                f"{SERVERS[k].name} unreachable at {servers[k]['address']}" for k in down
            )
            manifest["systems"][name] = {"status": "skipped", "reason": reason}
            log(f"{name}: SKIPPED, {reason}")
    write_manifest(raw_dir, manifest)
    interrupted = False
    for name in selected:
        if name in manifest["systems"]:
            continue
        try:
            manifest["systems"][name] = run_system(name, args, raw_dir)
        except KeyboardInterrupt:
            manifest["systems"][name] = {"status": "interrupted", "reason": "interrupted (Ctrl-C)"}
            for rest in selected[selected.index(name) + 1 :]:
                manifest["systems"].setdefault(
                    rest, {"status": "not run", "reason": "run interrupted"}
                )
            interrupted = True
            break
        finally:
            manifest["wall_seconds"] = time.monotonic() - t0
            write_manifest(raw_dir, manifest)
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--systems", default=",".join(report.SYSTEM_ORDER), help="comma list (default: all)"
    )
    parser.add_argument("--runs", type=int, help="default 3")
    parser.add_argument("--tasks", type=int, help="default 2000")
    parser.add_argument("--workers", help="worker counts, comma list (default 1,2,4)")
    parser.add_argument("--latency-calls", type=int, help="default 50")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="passed to every script, with only the sizes given here: each has its quick sizes",
    )
    parser.add_argument("--no-million", action="store_true", help="skip the 1M-invocation run")
    parser.add_argument(
        "--timeout", type=float, help="seconds per system (default: from the sizes)"
    )
    parser.add_argument("--raw-dir", type=Path, help="default: bench/results/raw/<date>/")
    parser.add_argument(
        "--out-dir", type=Path, default=RESULTS_DIR, help="<date>.md and <date>/*.png go here"
    )
    parser.add_argument(
        "--report-only", type=Path, metavar="RAW_DIR", help="render from existing JSON"
    )
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := sorted(set(args.systems) - set(SYSTEMS)):
        parser.error(
            f"unknown system(s): {', '.join(unknown)}; known: {', '.join(report.SYSTEM_ORDER)}"
        )
    try:
        counts = [int(w) for w in str(size(args, "workers")).split(",")]
    except ValueError:
        parser.error(f"--workers: comma-separated integers, not {args.workers!r}")
    if report.HEADLINE_WORKERS not in counts and not (args.quick and args.workers is None):
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
