"""The one measurement procedure of ``make bench``, the same for every system.

Each system's script (``bench/throughput.py`` for the pynenc systems, ``bench/peers/*`` for
the peers) subclasses :class:`Bench` and says only how to submit, read results, run workers
and reset its store; :meth:`Bench.measure_run` does the rest, identically for all. One run
(the driver, ``bench/bench.py``, runs run 1 of every system, then run 2 of every system...):

1. **Submit rate**, no worker running: ``--tasks`` N single calls, then (where the system has
   one) one batch of N; the clock covers the client's calls only.
2. **End to end**, per worker count W (fresh workers, up and idle for ``--settle-seconds``):
   N single calls then every result read by the client, and (a second measurement on the
   same workers, after another settle) one batch of N then every result read. The clock runs
   from the first submit to the last result the client has read. N / elapsed.
3. **Round trip**, fresh W=2 workers: ``--latency-calls`` sequential calls (after 2 unmeasured
   ones), each after a seeded idle gap of ``--gap-min``..``--gap-max`` s; one call = submit,
   then the client waits for and reads that result.
4. **Statements** (untimed, counting on; ``bench/wirecount.py``): fresh W=2 workers counting
   every statement they send, idle statements/s of each worker-side process over
   ``--idle-seconds``; then ``--lifecycle-calls`` single calls, the client counting too: its
   submits, then (counting paused: however a system waits is not the lifecycle's) a wait
   until all are done, then the client reads each result once. Statements of the client and
   of every worker-side process over that window, divided by the calls.

No process of phases 1-3 counts anything. Worker processes run in their own session and
are killed with their whole group on any exit; the store is dropped at the end.
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
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import ready, wirecount  # noqa: E402
from bench.runner_idle_wake import percentile  # noqa: E402  (one linear interpolation)

PYTHON = sys.executable
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
LATENCY_WORKERS = 2  # round trip and statements: W=2, as the budgets
LATENCY_WARMUPS = 2
LIFECYCLE_WARMUPS = 5
ROUND_TRIP_POLL_SEC = 0.001  # a client without a blocking wait polls its one job this often
RESULTS_POLL_SEC = 0.01  # ... and all its pending jobs this often, end to end
READY_TIMEOUT_SEC = 120.0
FULL = {
    "tasks": 2000,
    "workers": "2",
    "latency_calls": 50,
    "lifecycle_calls": 200,
    "idle_seconds": 10.0,
    "idle_warmup_seconds": 5.0,
}
QUICK = {
    "tasks": 200,
    "workers": "2",
    "latency_calls": 10,
    "lifecycle_calls": 50,
    "idle_seconds": 5.0,
    "idle_warmup_seconds": 2.0,
}
BREAKDOWN_TOP = 30


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class ServerUnavailable(Exception):
    """A server the benchmark needs does not answer: exit 2 with one line."""


# ---------------------------------------------------------------------------- options


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options every system script takes (``bench/bench.py`` passes them on)."""
    parser.add_argument("--runs", type=int, default=1, help="runs in this process (default 1)")
    parser.add_argument(
        "--run-index", type=int, default=1, help="number of the first run (the driver's round)"
    )
    parser.add_argument("--tasks", type=int, help="N per submit and end-to-end measurement")
    parser.add_argument("--workers", help="worker counts for end to end, comma list (default 2)")
    parser.add_argument("--latency-calls", type=int)
    parser.add_argument("--lifecycle-calls", type=int, help="calls counted for statements")
    parser.add_argument("--idle-seconds", type=float, help="idle counting window")
    parser.add_argument("--idle-warmup-seconds", type=float)
    parser.add_argument("--settle-seconds", type=float, default=2.0)
    parser.add_argument("--gap-min", type=float, default=0.05, help="idle gap before a call, s")
    parser.add_argument("--gap-max", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--no-count", action="store_true", help="skip the statement phase")
    parser.add_argument("--out", type=Path, help="JSON result file (default: stdout)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="development sizes: --tasks 200 --latency-calls 10 --lifecycle-calls 50, "
        "5 s idle window",
    )


def finish_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers: comma-separated integers, not {args.workers!r}")
    if not args.worker_counts or min(args.worker_counts) < 1 or args.tasks < 2 or args.runs < 1:
        parser.error("--workers, --runs must be positive, --tasks at least 2")


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


#: How long a PostgreSQL backend may keep its statistics before publishing them once idle
#: (PGSTAT_MIN_INTERVAL, 1 s): read the counters after the workers have been idle longer.
PG_STATS_DELAY_SEC = 1.2


def pg_server_work(url: str) -> dict[str, Any]:
    """PostgreSQL's own counters of the work done in ``url``'s database so far: WAL
    written (cluster-wide: nothing else runs during a measurement), full-page images,
    blocks read from outside shared buffers, per index and table. Read on a connection of
    its own, outside any timed window."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        lsn, fpi = conn.execute(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, wal_fpi FROM pg_stat_wal"
        ).fetchone()  # type: ignore[misc]
        read, hit = conn.execute(
            "SELECT blks_read, blks_hit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()  # type: ignore[misc]
        relations = conn.execute(
            "SELECT indexrelname, idx_blks_read FROM pg_statio_user_indexes "
            "UNION ALL SELECT relname, heap_blks_read FROM pg_statio_user_tables"
        ).fetchall()
    return {
        "wal_bytes": int(lsn),
        "wal_fpi": int(fpi),
        "blks_read": int(read),
        "blks_hit": int(hit),
        "read_by": {name: int(n or 0) for name, n in relations},
    }


def cpu_snapshot(procs: Iterable[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds (user + system) so far: the whole machine's, this client process's,
    and the worker-side processes' (``procs`` and their descendants, alive now)."""
    import psutil

    machine = psutil.cpu_times()
    own = os.times()
    workers = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    workers += times.user + times.system
    return {
        "machine": machine.user + machine.nice + machine.system + machine.softirq,
        "client": own.user + own.system,
        "workers": workers,
    }


def describe_cpu(before: dict[str, float], after: dict[str, float], n: int) -> str:
    """CPU per task between two :func:`cpu_snapshot`: the rest of the machine's is mostly
    the database or Redis server's."""
    ms = {k: (after[k] - before[k]) * 1000 / n for k in before}
    rest = ms["machine"] - ms["client"] - ms["workers"]
    return (
        f"CPU per task {ms['machine']:.2f} ms: client {ms['client']:.2f}, workers "
        f"{ms['workers']:.2f}, the rest (servers) {rest:.2f}"
    )


def describe_server_work(before: dict[str, Any], after: dict[str, Any], n: int) -> str:
    """Per task, what the server did between two :func:`pg_server_work`, and where it
    read the most blocks."""
    delta = {k: after[k] - before[k] for k in ("wal_bytes", "wal_fpi", "blks_read", "blks_hit")}
    reads = sorted(
        ((after["read_by"].get(k, 0) - v, k) for k, v in before["read_by"].items()),
        reverse=True,
    )
    top = ", ".join(f"{name} {count / n:.2f}" for count, name in reads[:3] if count > 0)
    return (
        f"server per task: WAL {delta['wal_bytes'] / n / 1024:.1f} KiB "
        f"({delta['wal_fpi'] / n:.2f} full-page images), blocks read "
        f"{delta['blks_read'] / n:.2f} (hit {delta['blks_hit'] / n:.0f})"
        + (f"; most read: {top}" if top else "")
    )


def postgres_version(admin_url: str) -> str:
    with _pg_admin(admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {str(row[0]).split()[0]}"


def recreate_pg_database(admin_url: str, name: str) -> str:
    """Drop (forcing out any session) and create ``name``; return its URL."""
    with _pg_admin(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_pg_database(admin_url: str, name: str, retry_sec: float = 15.0) -> None:
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
    """The environment of a worker: ours, minus every counting or readiness variable (the
    caller adds those it wants), plus ``extra``."""
    drop = (wirecount.COUNT_DIR_ENV, ready.READY_DIR_ENV, "PYNENC_BENCH_COUNT_DIR")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith("PYNENC__") and k != "DATABASE_URL"
    }
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


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM to each leader (each system's own shutdown), SIGKILL to each whole group
    after ``timeout`` or once the leader is gone (children it left behind)."""
    procs = list(procs)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
    for proc in procs:
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


def wait_ready_files(
    directory: Path, procs: list[subprocess.Popen[bytes]], count: int, what: str
) -> None:
    """Until ``count`` processes have written a ready file (``bench/ready.py``)."""
    wait_until(
        lambda: len(ready.read(directory)) >= count,
        what,
        timeout=READY_TIMEOUT_SEC,
        procs=procs,
        interval=0.1,
    )


class Deadline:
    """Turns a stall into an error: after ``seconds``, or as soon as a worker exits, the
    main thread gets a KeyboardInterrupt that :meth:`__exit__` turns into a RuntimeError
    (pynenc's result waits loop forever when nothing completes).

    The interrupt is repeated until the main thread has left the block: one raised while
    SQLite runs a trace callback is swallowed by ``sqlite3``.
    """

    def __init__(self, seconds: float, what: str, runner: Any = None, on_stall: Any = None) -> None:
        self.seconds, self.what = seconds, what
        if runner is None:
            self.procs = []
        else:
            self.procs = list(runner) if isinstance(runner, list) else [runner]
        self.on_stall = on_stall
        self.reason: str | None = None
        self._done = threading.Event()

    def _watch(self) -> None:
        import _thread

        end = time.monotonic() + self.seconds
        while not self._done.wait(0.5):
            if self.reason is None:
                dead = [p for p in self.procs if p.poll() is not None]
                if dead:
                    self.reason = f"a worker exited with {dead[0].returncode}"
                elif time.monotonic() > end:
                    self.reason = f"not done after {self.seconds:.0f} s"
                    if self.on_stall is not None:
                        with contextlib.suppress(Exception):
                            self.on_stall()
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


# ---------------------------------------------------------------------------- statistics


def versions(*dists: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in dists:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


# ---------------------------------------------------------------------------- counting


def fresh_dumps(directory: Path, after: float, pids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Every process's counts, once each of ``pids`` (alive) has dumped after ``after``."""
    wanted = set(pids)
    result: dict[int, dict[str, Any]] = {}

    def done() -> bool:
        nonlocal result
        result = wirecount.read_dir(directory)
        late = [p for p in wanted if p in result and result[p]["t"] <= after and _alive(p)]
        return not late

    wait_until(done, "statement counts", timeout=15, interval=0.05)
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delta(
    before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]
) -> tuple[Counter[str], int]:
    """Statements by text and connections opened between two sets of dumps, all processes
    summed (a process that appeared in between counts from zero)."""
    statements: Counter[str] = Counter()
    connections = 0
    for pid, end in after.items():
        start = before.get(pid, {})
        start_sql = start.get("statements", {})
        for sql, n in end["statements"].items():
            if n - start_sql.get(sql, 0):
                statements[sql] += n - start_sql.get(sql, 0)
        connections += end["connections"] - start.get("connections", 0)
    return statements, connections


# ---------------------------------------------------------------------------- the bench


class Bench(ABC):
    """One system: its store, workers, submits and result reads. The procedure is shared."""

    system: str  # the report's row, e.g. "procrastinate" or "pynenc-django-postgresql-tuned"
    kind = "peer"
    #: A PostgreSQL store's URL: its server's work per task joins the end-to-end notes.
    server_work_url: str | None = None
    has_batch = True
    submit_description = ""  # what the single and batch submits call
    wait_description = ""  # how the client reads results

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.notes: list[str] = []
        self.run = 0
        self._log_seq = 0

    # --- to implement

    @abstractmethod
    def connect(self) -> None:
        """Check the server (raise :class:`ServerUnavailable`) and set the client up."""

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
        """Forget every job, between phases (no worker running)."""

    @abstractmethod
    def drop_store(self) -> None:
        """At exit, also after errors: leave nothing behind."""

    @abstractmethod
    def start_workers(
        self, count: int, count_dir: Path | None = None
    ) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` workers (counting into ``count_dir`` if given) and return once
        they are up and waiting for work."""

    @abstractmethod
    def submit_single(self, n: int, start: int = 0) -> Any:
        """Submit ``noop(i)`` for ``i`` in ``start..start+n`` one call each; the handles."""

    def submit_batch(self, n: int) -> Any:
        """Submit ``noop(i)`` for ``i < n`` with the batch API; its handle(s)."""
        raise NotImplementedError

    @abstractmethod
    def read_results(self, handles: Any, n: int, batch: bool) -> None:
        """Block until the client has read every result of ``handles`` (checked)."""

    @abstractmethod
    def read_each(self, handles: Any, n: int, start: int = 0) -> None:
        """Read each result of finished ``handles`` once, with the per-call API (checked)."""

    @abstractmethod
    def done_count(self, handles: Any) -> int:
        """How many of ``handles`` are finished (a look that counting does not see)."""

    @abstractmethod
    def round_trip(self, i: int) -> None:
        """Submit ``noop(i)``, wait for its result and read it (checked)."""

    def before_counting(self) -> None:  # noqa: B027 - optional hook
        """Prepare the client for counting (e.g. reopen connections so they are traced)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close client connections (before the store is dropped)."""

    def stall_dump(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """Evidence when a measurement stalls (py-spy dumps, when installed)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            return
        import psutil

        for proc in procs:
            with contextlib.suppress(psutil.Error):
                pids = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(True))]
                for pid in pids:
                    out = subprocess.run(
                        [spy, "dump", "--pid", str(pid)], capture_output=True, text=True
                    )
                    log(f"py-spy dump of {pid}:\n{out.stdout}{out.stderr}")

    # --- shared

    def log_path(self, name: str) -> Path:
        self._log_seq += 1
        return self.work / f"{self._log_seq:03d}-{name}.log"

    def settings(self) -> dict[str, Any]:
        return {
            "tasks": self.args.tasks,
            "workers": self.args.worker_counts,
            "latency_calls": self.args.latency_calls,
            "lifecycle_calls": self.args.lifecycle_calls,
            "submit": self.submit_description,
            "wait": self.wait_description,
        }

    def deadline(self, n: int, what: str, procs: list[subprocess.Popen[bytes]]) -> Deadline:
        return Deadline(
            max(120.0, n / 5), f"{self.system} {what}", procs, lambda: self.stall_dump(procs)
        )

    @contextlib.contextmanager
    def workers(
        self, count: int, count_dir: Path | None = None
    ) -> Iterator[list[subprocess.Popen[bytes]]]:
        procs = self.start_workers(count, count_dir)
        try:
            yield procs
            check_alive(procs)
        finally:
            stop_processes(procs)
        self.clear_jobs()

    def warm_up(self) -> None:
        """A few single and batch submits before anything is timed: the client's
        connections, imports and prepared statements, as every measurement finds them."""
        self.submit_single(3, start=10**6)
        if self.has_batch:
            self.submit_batch(3)
        self.clear_jobs()

    def submit_rates(self, n: int) -> tuple[float, float | None]:
        """Single and batch submits of ``n``, no worker running; calls per second."""
        self.warm_up()
        with Deadline(max(120.0, n / 2), f"{self.system} single submits"):
            started = time.perf_counter()
            handles = self.submit_single(n)
            single = n / (time.perf_counter() - started)
        del handles  # Celery: its results unsubscribe, untimed
        self.clear_jobs()
        batch = None
        if self.has_batch:
            with Deadline(max(120.0, n / 2), f"{self.system} batch submit"):
                started = time.perf_counter()
                handles = self.submit_batch(n)
                batch = n / (time.perf_counter() - started)
            del handles
            self.clear_jobs()
        log(
            f"{self.system}: submit single {single:.0f}/s, batch "
            + ("–" if batch is None else f"{batch:.0f}/s")
        )
        return single, batch

    def end_to_end(
        self, procs: list[subprocess.Popen[bytes]], n: int, batch: bool
    ) -> tuple[float, str]:
        """From the first submit to the last result read by the client; tasks/s, a note."""
        mode = "batch" if batch else "single"
        server = self.server_work_url
        before = pg_server_work(server) if server else None
        cpu = cpu_snapshot(procs)
        with self.deadline(n, f"end to end ({mode})", procs):
            started = time.perf_counter()
            handles = self.submit_batch(n) if batch else self.submit_single(n)
            submitted = time.perf_counter()
            self.read_results(handles, n, batch)
            elapsed = time.perf_counter() - started
        cpu_used = describe_cpu(cpu, cpu_snapshot(procs), n)
        check_alive(procs)
        note = (
            f"{mode}: {n} tasks in {elapsed:.2f} s = {n / elapsed:.1f}/s "
            f"(submitting {submitted - started:.2f} s of it); {cpu_used}"
        )
        if server and before:
            time.sleep(PG_STATS_DELAY_SEC)
            note += "; " + describe_server_work(before, pg_server_work(server), n)
        return n / elapsed, note

    def throughput(self, workers: int, n: int) -> tuple[float, float | None, list[str]]:
        """Single then batch end to end on the same fresh, idle workers."""
        notes = []
        with self.workers(workers) as procs:
            time.sleep(self.args.settle_seconds)
            single, note = self.end_to_end(procs, n, batch=False)
            notes.append(f"W={workers} end to end {note}")
            batch = None
            if self.has_batch:
                time.sleep(self.args.settle_seconds)
                batch, note = self.end_to_end(procs, n, batch=True)
                notes.append(f"W={workers} end to end {note}")
        log(
            f"{self.system}: W={workers} end to end single {single:.1f}/s, batch "
            + ("–" if batch is None else f"{batch:.1f}/s")
        )
        return single, batch, notes

    def latency(self) -> list[float]:
        rng = random.Random(self.args.seed + self.run)
        samples = []
        with self.workers(LATENCY_WORKERS) as procs:
            time.sleep(self.args.settle_seconds)
            calls = LATENCY_WARMUPS + self.args.latency_calls
            with Deadline(60 + calls * 10, f"{self.system} round trips", procs):
                for i in range(calls):
                    time.sleep(rng.uniform(self.args.gap_min, self.args.gap_max))
                    started = time.perf_counter()
                    self.round_trip(i)
                    elapsed = time.perf_counter() - started
                    if i >= LATENCY_WARMUPS:
                        samples.append(round(elapsed * 1000, 3))
        log(
            f"{self.system}: round trip p50 {percentile(samples, 50):.2f} ms, "
            f"p99 {percentile(samples, 99):.2f} ms"
        )
        return samples

    def statements(self) -> dict[str, Any]:
        """The untimed counting phase: idle rates, then statements per lifecycle."""
        args = self.args
        count_dir = self.work / f"counts-{self.run}-{time.time_ns()}"
        count_dir.mkdir()
        k = args.lifecycle_calls
        with self.workers(LATENCY_WORKERS, count_dir) as procs:
            time.sleep(args.idle_warmup_seconds)
            pids = list(wirecount.read_dir(count_dir))
            start = fresh_dumps(count_dir, time.time(), pids)
            time.sleep(args.idle_seconds)
            end = fresh_dumps(count_dir, time.time(), pids)
            rates = {}
            for pid, after in end.items():
                if pid in start and after["t"] > start[pid]["t"]:
                    rates[pid] = (after["total"] - start[pid]["total"]) / (
                        after["t"] - start[pid]["t"]
                    )
            leaders = {p.pid for p in procs}
            self.notes.append(
                f"run {self.run}: idle statements/s per worker-side process: "
                + ", ".join(
                    f"{end[pid]['name']}{' (started by the benchmark)' if pid in leaders else ''}"
                    f" {rate:.2f}"
                    for pid, rate in sorted(rates.items(), key=lambda kv: -kv[1])
                )
            )
            idle_sql, idle_connections = delta(start, end)
            window = (
                statistics.median(end[p]["t"] - start[p]["t"] for p in rates)
                if rates
                else args.idle_seconds
            )

            self.before_counting()
            wirecount.install()  # the client: in memory, no dump thread
            try:
                wirecount.reset()
                with Deadline(120 + k, f"{self.system} counted calls", procs):
                    warm = self.submit_single(LIFECYCLE_WARMUPS, start=10**6)
                    self._wait_done(warm, LIFECYCLE_WARMUPS, procs)
                    self.read_each(warm, LIFECYCLE_WARMUPS, start=10**6)
                    client0 = wirecount.snapshot()
                    before = fresh_dumps(count_dir, time.time(), pids)
                    handles = self.submit_single(k)
                    client1 = wirecount.snapshot()
                    with wirecount.paused():
                        self._wait_done(handles, k, procs)
                    client2 = wirecount.snapshot()
                    self.read_each(handles, k)
                    client3 = wirecount.snapshot()
                    after = fresh_dumps(count_dir, time.time(), pids)
            finally:
                wirecount.uninstall()
        me = os.getpid()
        client_sql, client_connections = delta({me: client0}, {me: client3})
        workers_sql, workers_connections = delta(before, after)
        total = client_sql + workers_sql
        submit = client1["total"] - client0["total"]
        read = client3["total"] - client2["total"]
        result = {
            "statements_per_lifecycle": round(sum(total.values()) / k, 3),
            "driver_sent_per_lifecycle": round(
                sum(n for sql, n in total.items() if wirecount.driver_sent(sql)) / k, 3
            ),
            "client_submit_per_lifecycle": round(submit / k, 3),
            "client_read_per_lifecycle": round(read / k, 3),
            "workers_per_lifecycle": round(sum(workers_sql.values()) / k, 3),
            "connections_per_lifecycle": round((client_connections + workers_connections) / k, 3),
            "statement_breakdown": {
                sql: round(n / k, 3) for sql, n in total.most_common(BREAKDOWN_TOP)
            },
            "idle_statements_per_s": round(max(rates.values()), 3) if rates else None,
            "idle_total_statements_per_s": round(sum(rates.values()), 3) if rates else None,
            "idle_connections_per_s": round(idle_connections / window, 3),
            "idle_processes": len(rates),
            "idle_breakdown": {sql: round(n / window, 3) for sql, n in idle_sql.most_common(10)},
        }
        log(
            f"{self.system}: {result['statements_per_lifecycle']:.2f} statements per lifecycle "
            f"(client submit {submit / k:.2f}, workers {result['workers_per_lifecycle']:.2f}, "
            f"client read {read / k:.2f}), {result['connections_per_lifecycle']:.2f} "
            f"connections; idle: busiest process {result['idle_statements_per_s']}/s, all "
            f"{len(rates)} {result['idle_total_statements_per_s']}/s"
        )
        return result

    def _wait_done(self, handles: Any, n: int, procs: list[subprocess.Popen[bytes]]) -> None:
        wait_until(
            lambda: self.done_count(handles) >= n,
            "counted calls to finish",
            timeout=120 + n,
            procs=procs,
            interval=0.01,
        )

    def measure_run(self, run: int) -> dict[str, Any]:
        args = self.args
        self.run = run
        log(f"{self.system} run {run}: fresh store")
        self.fresh_store()
        single, batch = self.submit_rates(args.tasks)
        throughput_single: dict[str, float] = {}
        throughput_batch: dict[str, float | None] = {}
        for w in args.worker_counts:
            t_single, t_batch, notes = self.throughput(w, args.tasks)
            throughput_single[str(w)] = round(t_single, 2)
            throughput_batch[str(w)] = None if t_batch is None else round(t_batch, 2)
            self.notes += [f"run {run}: {n}" for n in notes]
        latency = self.latency() if args.latency_calls else []
        entry: dict[str, Any] = {
            "run": run,
            "throughput_single": throughput_single,
            "throughput_batch": throughput_batch,
            "submit_single_per_s": round(single, 2),
            "submit_batch_per_s": None if batch is None else round(batch, 2),
            "latency_ms": latency,
        }
        if not args.no_count:
            entry.update(self.statements())
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        self.notes.append(f"run {run}: load average at its end {load} ({os.cpu_count()} cores)")
        return entry

    def identity(self) -> dict[str, Any]:
        """Who was measured (asked while the store exists: a label may query the server)."""
        return {
            "system": self.system,
            "label": self.label(),
            "kind": self.kind,
            "database": self.database(),
            "versions": self.versions(),
        }

    def document(self, identity: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **identity,
            "settings": self.settings(),
            "runs": runs,
            "notes": self.notes,
        }

    # --- the bulk reader of the systems without a blocking wait

    def poll_results(
        self, pending: dict[Any, int], fetch: Callable[[list[Any]], list[tuple[Any, Any]]]
    ) -> None:
        """Read every pending job's result row until none is pending: one query for all
        pending jobs every :data:`RESULTS_POLL_SEC`, finished ones dropped as read.
        ``pending`` maps job id -> expected value; ``fetch(ids)`` returns ``(id, value)`` of
        the finished ones (raising on a failed job)."""
        while pending:
            for job_id, value in fetch(list(pending)):
                expected = pending.pop(job_id)
                if value is not None and value != expected:
                    raise RuntimeError(f"{self.system}: job {job_id} returned {value!r}")
            if pending:
                time.sleep(RESULTS_POLL_SEC)


def write_result(document: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    log(f"wrote {out}")


def main(bench: Bench) -> int:
    """Run every measurement of ``bench``; clean up whatever happens."""
    install_exit_handlers()
    args = bench.args
    started = time.monotonic()
    try:
        bench.connect()
    except ServerUnavailable as exc:
        print(f"{bench.system}: {exc}", file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    ok = False
    try:
        identity = bench.identity()
        for run in range(args.run_index, args.run_index + args.runs):
            runs.append(bench.measure_run(run))
        ok = True
    except ServerUnavailable as exc:
        print(f"{bench.system}: {exc}", file=sys.stderr)
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
            shutil.rmtree(bench.work, ignore_errors=True)
        else:
            log(f"worker logs kept in {bench.work}")
    bench.notes.append(f"wall time of this script {time.monotonic() - started:.0f} s")
    write_result(bench.document(identity, runs), args.out)
    return 0


def work_dir(system: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-{system}-"))
