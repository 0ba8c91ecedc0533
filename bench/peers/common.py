"""What the three peer benchmarks share: options, worker processes, the run loop, the JSON.

Every peer is measured the same way (:meth:`PeerBench.measure_run`), so the numbers differ
only by what the peer does:

1. submit rate with no worker running: ``--tasks`` submits one call each, then (if the peer
   has a batch API) one batch of ``--tasks``;
2. for each worker count W: start W workers, wait until they are idle, then time from the
   first submit to every result being readable by the client (throughput);
3. with 2 freshly started workers idle: ``--latency-calls`` sequential round trips (after 2
   unmeasured ones), each after a seeded random idle gap of ``--gap-min``..``--gap-max`` s;
4. statement counts, where the peer can count them cheaply.

Worker subprocesses run in their own session, so cleanup kills the whole process group;
they are killed on any exit (errors, SIGTERM, Ctrl-C) and the bench store is dropped.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
LATENCY_WORKERS = 2
LATENCY_WARMUPS = 2
POLL_SEC = 0.001  # latency: how often a peer without a blocking wait polls its job's status
SETTLE_SEC = 1.0  # after the workers are ready, before timing: let start-up work finish
READY_TIMEOUT_SEC = 120.0
# Statement counting: the per-process count files (``<pid>.json``) of ``bench.benchapp.counting``
# and ``bench.peers.pgcount``; the variable is the one pynenc-django's own benchmark uses.
COUNT_DIR_ENV = "PYNENC_BENCH_COUNT_DIR"
READY_DIR_ENV = "BENCH_PEER_READY_DIR"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class ServerUnavailable(Exception):
    """A server the benchmark needs does not answer: exit non-zero with one line."""


# ---------------------------------------------------------------------------- options


def parse_args(
    description: str,
    argv: list[str] | None,
    *,
    postgres: bool = False,
    redis: bool = False,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per throughput/submit run")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--latency-calls", type=int, default=50)
    parser.add_argument("--gap-min", type=float, default=0.05, help="idle gap before a call, s")
    parser.add_argument("--gap-max", type=float, default=0.2)
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle count window")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, help="JSON result file (default: stdout)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="development sizes: --tasks 200 --runs 1 --workers 2 --latency-calls 10",
    )
    if postgres:
        parser.add_argument(
            "--postgres-url",
            default=DEFAULT_POSTGRES_URL,
            help="an administrative database; the bench database is created next to it",
        )
    if redis:
        parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.runs, args.workers, args.latency_calls = 200, 1, "2", 10
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if not args.workers or min(args.workers) < 1 or args.tasks < 1 or args.runs < 1:
        parser.error("--workers, --tasks and --runs must be positive")
    return args


# ---------------------------------------------------------------------------- servers


def with_database(url: str, name: str) -> str:
    """``url`` with its path (database name) replaced."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _pg_admin(admin_url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        where = urlsplit(admin_url).netloc.rpartition("@")[2]
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServerUnavailable(f"PostgreSQL at {where} unreachable: {first}") from exc


def postgres_version(admin_url: str) -> str:
    with _pg_admin(admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {str(row[0]).split()[0]}"


def recreate_database(admin_url: str, name: str) -> str:
    """Drop (forcing out any session) and create ``name``; return its URL."""
    with _pg_admin(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str, retry_sec: float = 15.0) -> None:
    """Drop ``name``; retry a while if the server is away (e.g. restarting), then give up."""
    deadline = time.monotonic() + retry_sec
    while True:
        try:
            with _pg_admin(admin_url) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except ServerUnavailable as exc:
            if time.monotonic() > deadline:
                log(f"could not drop database {name}: {exc}")
                return
            time.sleep(0.5)


def redis_client(url: str) -> Any:
    """A connected client for ``url`` (its db number is the bench's)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        where = urlsplit(url).netloc.rpartition("@")[2]
        raise ServerUnavailable(f"Redis at {where} unreachable: {exc}") from exc
    return client


# ---------------------------------------------------------------------------- processes

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start_process(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so the whole group can be killed), output to a file."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    _LIVE[proc.pid] = proc
    return proc


def log_tail(proc: subprocess.Popen[bytes], lines: int = 25) -> str:
    path: Path | None = getattr(proc, "log_path", None)
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def check_alive(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(
                f"worker {proc.args!r} exited with {proc.returncode}:\n{log_tail(proc)}"
            )


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM each process group (warm shutdown), SIGKILL what is left after ``timeout``."""
    procs = list(procs)
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
    for proc in procs:
        # The leader may be gone while its children (prefork pool, ...) linger: kill the group.
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        _LIVE.pop(proc.pid, None)


def kill_all() -> None:
    """Kill every worker group still running (exit path)."""
    for proc in list(_LIVE.values()):
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    _LIVE.clear()


def _on_terminate(signum: int, frame: Any) -> None:
    log(f"{signal.Signals(signum).name}: stopping workers, dropping the bench store")
    raise SystemExit(128 + signum)


def install_exit_handlers() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C does, so ``finally`` blocks clean up."""
    signal.signal(signal.SIGTERM, _on_terminate)
    signal.signal(signal.SIGHUP, _on_terminate)
    atexit.register(kill_all)


def wait_until(
    predicate: Callable[[], bool],
    what: str,
    *,
    timeout: float,
    procs: Iterable[subprocess.Popen[bytes]] = (),
    interval: float = 0.05,
) -> None:
    """Poll ``predicate``; fail if a worker dies or ``timeout`` passes."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while not predicate():
        check_alive(procs)
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def ready_files(directory: Path) -> int:
    return sum(1 for _ in directory.glob("*.ready"))


# ---------------------------------------------------------------------------- counting


def read_counts(directory: Path, key: str) -> dict[int, tuple[float, int]]:
    """``{pid: (dump time, cumulative count)}`` from the per-process count files."""
    counts: dict[int, tuple[float, int]] = {}
    for path in directory.glob("*.json"):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now
        counts[int(payload["pid"])] = (float(payload["t"]), int(payload[key]))
    return counts


def fresh_counts(
    directory: Path, key: str, after: float, pids: int
) -> dict[int, tuple[float, int]]:
    """Wait for ``pids`` processes to have dumped their counts after wall-clock ``after``."""
    result: dict[int, tuple[float, int]] = {}

    def ready() -> bool:
        nonlocal result
        result = read_counts(directory, key)
        return sum(1 for t, _ in result.values() if t > after) >= pids

    wait_until(ready, "statement counts", timeout=10)
    return result


def count_delta(before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]]) -> int:
    return sum(n - before.get(pid, (0.0, 0))[1] for pid, (_, n) in after.items())


# ---------------------------------------------------------------------------- results


def versions(*dists: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in dists:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def summary_line(system: str, run: dict[str, Any]) -> str:
    def num(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    tp = " ".join(f"W{w}={num(v)}/s" for w, v in run["throughput"].items())
    lat = run["latency_ms"]
    lat_text = (
        f"rt p50 {num(statistics.median(lat), 1)} ms p95 "
        f"{num(sorted(lat)[max(0, round(0.95 * len(lat)) - 1)], 1)} ms"
        if lat
        else "rt -"
    )
    return (
        f"{system} run {run['run']}: throughput {tp}; submit single "
        f"{num(run['submit_single_per_s'])}/s batch {num(run['submit_batch_per_s'])}/s; "
        f"{lat_text}; stmts/lifecycle {num(run['statements_per_lifecycle'], 1)}, "
        f"idle {num(run['idle_statements_per_s'], 2)}/s"
    )


def write_result(document: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log(f"wrote {out}")


# ---------------------------------------------------------------------------- the run


class PeerBench(ABC):
    """One peer: how to reset its store, submit, wait and run workers. The loop is shared."""

    system: str
    submit_description: str
    wait_description: str

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.notes: list[str] = []
        self.run = 0
        self._log_seq = 0

    # --- to implement

    @abstractmethod
    def connect(self) -> None:
        """Check the server (raise :class:`ServerUnavailable`) and note its version."""

    @abstractmethod
    def database(self) -> str: ...

    @abstractmethod
    def label(self) -> str: ...

    @abstractmethod
    def versions(self) -> dict[str, str]: ...

    @abstractmethod
    def fresh_store(self) -> None:
        """A clean store at the start of a run (database recreated / Redis db flushed)."""

    @abstractmethod
    def clear_jobs(self) -> None:
        """Forget every job, between phases (workers stopped)."""

    @abstractmethod
    def drop_store(self) -> None:
        """At exit, also after errors: leave nothing behind."""

    @abstractmethod
    def start_workers(
        self, count: int, count_dir: Path | None = None
    ) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` workers and return once they are idle, waiting for work."""

    @abstractmethod
    def submit_single(self, n: int) -> float:
        """Submit ``n`` tasks one call each; return the elapsed seconds."""

    def submit_batch(self, n: int) -> float | None:
        """Submit ``n`` tasks with the batch API; ``None`` if the peer has none."""
        return None

    @abstractmethod
    def throughput(self, n: int) -> float:
        """Submit ``n`` tasks and wait until all results are readable; elapsed seconds."""

    @abstractmethod
    def round_trip(self, i: int) -> float:
        """Submit one task, wait until its result is readable; elapsed seconds."""

    def statements(self) -> tuple[float | None, float | None]:
        """(statements per task lifecycle, idle statements/s of one worker) or ``None``s."""
        return None, None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close client connections (before the store is dropped)."""

    # --- shared

    def log_path(self, name: str) -> Path:
        self._log_seq += 1
        return self.work / f"{self._log_seq:03d}-{name}.log"

    def settings(self) -> dict[str, Any]:
        return {
            "tasks": self.args.tasks,
            "workers": self.args.workers,
            "latency_calls": self.args.latency_calls,
            "runs": self.args.runs,
            "submit": self.submit_description,
            "wait": self.wait_description,
        }

    def latency(self) -> list[float]:
        rng = random.Random(self.args.seed)
        samples = []
        for i in range(LATENCY_WARMUPS + self.args.latency_calls):
            time.sleep(rng.uniform(self.args.gap_min, self.args.gap_max))
            elapsed = self.round_trip(i)
            if i >= LATENCY_WARMUPS:
                samples.append(round(elapsed * 1000, 3))
        return samples

    def measure_run(self, run: int) -> dict[str, Any]:
        args = self.args
        self.run = run
        log(f"{self.system} run {run}: fresh store")
        self.fresh_store()
        self.submit_single(3)  # connections, prepared statements: not timed
        self.clear_jobs()
        single = args.tasks / self.submit_single(args.tasks)
        self.clear_jobs()
        batch_elapsed = self.submit_batch(args.tasks)
        batch = None if batch_elapsed is None else args.tasks / batch_elapsed
        self.clear_jobs()
        batch_text = "-" if batch is None else f"{batch:.0f}/s"
        log(f"{self.system} run {run}: submit single {single:.0f}/s, batch {batch_text}")

        throughput: dict[str, float] = {}
        for workers in args.workers:
            procs = self.start_workers(workers)
            try:
                time.sleep(SETTLE_SEC)
                elapsed = self.throughput(args.tasks)
                check_alive(procs)
            finally:
                stop_processes(procs)
            self.clear_jobs()
            throughput[str(workers)] = round(args.tasks / elapsed, 2)
            log(f"{self.system} run {run}: W={workers} {args.tasks / elapsed:.1f} tasks/s")

        # Fresh workers for the latency, so it does not depend on the last throughput run
        # (after a burst, polling workers all go idle at the same instant).
        procs = self.start_workers(LATENCY_WORKERS)
        try:
            time.sleep(SETTLE_SEC)
            latency = self.latency()
            check_alive(procs)
        finally:
            stop_processes(procs)
        self.clear_jobs()

        lifecycle, idle = self.statements()
        self.clear_jobs()
        return {
            "run": run,
            "throughput": throughput,
            "submit_single_per_s": round(single, 2),
            "submit_batch_per_s": None if batch is None else round(batch, 2),
            "latency_ms": latency,
            "statements_per_lifecycle": None if lifecycle is None else round(lifecycle, 3),
            "idle_statements_per_s": None if idle is None else round(idle, 3),
            "throughput_1m": None,
        }

    def document(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "system": self.system,
            "label": self.label(),
            "kind": "peer",
            "database": self.database(),
            "versions": self.versions(),
            "settings": self.settings(),
            "runs": runs,
            "notes": self.notes,
        }


def main(bench_class: type[PeerBench], args: argparse.Namespace) -> int:
    """Run every measurement of ``bench_class``; clean up whatever happens."""
    install_exit_handlers()
    work = Path(tempfile.mkdtemp(prefix=f"peer-{bench_class.system}-"))
    bench = bench_class(args, work)
    started = time.monotonic()
    try:
        bench.connect()
    except ServerUnavailable as exc:
        print(f"{bench_class.system}: {exc}", file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    ok = False
    try:
        for run in range(1, args.runs + 1):
            result = bench.measure_run(run)
            runs.append(result)
            print(summary_line(bench.system, result), file=sys.stderr, flush=True)
        ok = True
    except ServerUnavailable as exc:
        print(f"{bench_class.system}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log("interrupted: stopping workers, dropping the bench store")
        return 130
    finally:
        kill_all()
        with contextlib.suppress(Exception):
            bench.close()
        bench.drop_store()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"worker logs kept in {work}")
    bench.notes.append(f"Total wall time {time.monotonic() - started:.0f} s.")
    write_result(bench.document(runs), args.out)
    return 0
