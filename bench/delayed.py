"""Delayed invocations (``apply_async(eta=...)``, ``countdown=``) on ``manage.py pynenc_runner``.

    .venv/bin/python bench/delayed.py [--databases sqlite,postgresql,mariadb]
    make bench-delayed [DELAYED_ARGS='--databases postgresql']

Per database, in a fresh subprocess (Django is set up once per process): a fresh database
(``pynenc_django_bench_delayed`` dropped and recreated on the servers, a temp file for
SQLite), one runner, ``bench/manage.py pynenc_runner --processes 2`` with statement counting
on (``bench/benchapp/counting.py``), its workers up and idle; a warm-up of 20 delayed calls
(the workers import the task; the client's time per ``apply_async`` sets how far ahead the
measured ones are due). Then, with the task ``started_at(i)``
(``bench/benchapp/delayed_tasks.py``), which returns ``[time.time(), pid]`` as it starts:

1. **Same instant**: ``--same-instant`` (1,000) calls ``apply_async(eta=T)``, all due at
   one ``T`` a few seconds after the last is submitted. Start delay = the task's own start
   time - ``T``: first, p50, p99, max; drain = the last invocation's final status time - ``T``.
   With 2 workers this is throughput-bound: the p99 is mostly queueing behind the others.
2. **Staggered**: ``--staggered`` (200) calls due every ``--spacing-ms`` (20 ms), all
   submitted before the first is due; start delay after each one's own due time: the
   per-invocation wake-up latency.
3. **Idle cost**: statements per second of the runner parent and of each worker over an
   ``--idle-seconds`` (20 s) window with nothing delayed, then again with
   ``--delayed-idle`` (1,000) invocations ``countdown=3600`` (counted as
   ``bench/runner_idle_wake.py`` counts them); also what the workers executed while the
   1,000 were being submitted.

The runners' recent statements (each process keeps its last 400, dumped every 0.2 s) are
collected during 1 and 2, and the report shows what the runner executed between the due
time and the task's start for the first start of 1 and for the median and the slowest of 2.

Results: ``bench/results/<date>-delayed.md`` (raw JSON under ``bench/results/raw/``,
git-ignored). No assertion on any time; the exit status is non-zero only when a
measurement failed. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# Run as a script, sys.path[0] is bench/ and ``import bench`` would find bench/bench.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bench import kill_tree  # noqa: E402
from bench.benchapp.counting import RECENT  # noqa: E402
from bench.fan_in import runner_log_summary  # noqa: E402
from bench.runner_idle_wake import (  # noqa: E402
    COUNT_DIR_ENV,
    MANAGE,
    RESULTS_DIR,
    child_env,
    idle_window,
    is_worker,
    kill_group,
    log,
    other_sessions,
    percentile,
    process_tree,
    read_counts,
    recreate_database,
    server_version,
    start_process,
    stop_process,
    versions,
    wait_for_workers,
)
from bench.throughput import (  # noqa: E402
    FINAL_STATUSES,
    check_server,
    terminate_as_interrupt,
    with_db_name,
)

DB_NAME = "pynenc_django_bench_delayed"
DATABASES = ("sqlite", "postgresql", "mariadb")
SERVER_URLS = {
    "postgresql": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "mariadb": f"mysql://root@127.0.0.1:3306/{DB_NAME}",
}
LOG_LEVEL = "warning"
WARMUP_CALLS = 20
STAGGERED_TARGET_P99_MS = 100.0  # PostgreSQL, issue 17
POLL_SEC = 0.25  # the client's look at how many are final (one COUNT)
TIMELINE_ROWS = 40


# ---------------------------------------------------------------------------- helpers


def sleep_until(epoch: float) -> None:
    time.sleep(max(0.0, epoch - time.time()))


def stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def submit(n: int, offset: int, **call: Any) -> tuple[list[str], list[float]]:
    """``n`` calls of ``started_at.apply_async(args=(offset + i,), **call(i))``; the ids
    and the time each call returned. ``eta`` may be a function of ``i``."""
    from bench.benchapp.delayed_tasks import started_at

    ids, returned = [], []
    for i in range(n):
        options = {k: v(i) if callable(v) else v for k, v in call.items()}
        invocation = started_at.apply_async(args=(offset + i,), **options)
        returned.append(time.time())
        ids.append(str(invocation.invocation_id))
    return ids, returned


def at(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def wait_final(ids: list[str], proc: subprocess.Popen, timeout: float) -> float:
    """Until every invocation is final (one COUNT every :data:`POLL_SEC`); when seen."""
    from pynenc_django import app
    from pynenc_django.models import Invocation

    deadline = time.time() + timeout
    while True:
        done = (
            Invocation.objects.for_app(app.app_id)
            .filter(invocation_id__in=ids, status__in=FINAL_STATUSES)
            .count()
        )
        if done >= len(ids):
            return time.time()
        if proc.poll() is not None:
            raise RuntimeError(f"the runner exited with {proc.returncode} ({done} final)")
        if time.time() > deadline:
            raise RuntimeError(f"{done} of {len(ids)} final after {timeout:.0f} s")
        time.sleep(POLL_SEC)


def records(ids: list[str]) -> list[dict[str, Any]]:
    """Per invocation, in submit order: its start time and pid (the task's own result),
    its status and when it was set (the final one)."""
    from pynenc_django import app
    from pynenc_django.models import Invocation, InvocationResult

    results = dict(
        InvocationResult.objects.for_app(app.app_id)
        .filter(invocation_id__in=ids)
        .values_list("invocation_id", "result")
    )
    statuses = {
        iid: (status, ts)
        for iid, status, ts in Invocation.objects.for_app(app.app_id)
        .filter(invocation_id__in=ids)
        .values_list("invocation_id", "status", "status_timestamp")
    }
    out = []
    for iid in ids:
        status, final_at = statuses.get(iid, (None, None))
        start, pid = (None, None)
        if iid in results:
            start, pid = app.client_data_store.deserialize(results[iid])
        out.append(
            {
                "id": iid,
                "status": status,
                "final_at": final_at.timestamp() if final_at else None,
                "start": start,
                "pid": int(pid) if pid is not None else None,
            }
        )
    failed = [r for r in out if r["status"] != "success" or r["start"] is None]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(ids)} did not succeed: "
            + ", ".join(f"{r['id']} {r['status']}" for r in failed[:5])
        )
    return out


class RecentStatements:
    """Collects the runner processes' recent statements (``counting.py`` keeps each
    process's last 400 with start time and duration, dumped every 0.2 s), read every
    0.1 s while active; ``gaps``: processes whose ring buffer turned over between two
    reads (statements missed)."""

    def __init__(self, count_dir: Path, parent_pid: int) -> None:
        self.count_dir, self.parent_pid = count_dir, parent_pid
        self.events: set[tuple[float, float, int, str]] = set()
        self.gaps: set[int] = set()
        self._newest: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-recent", daemon=True)

    def __enter__(self) -> RecentStatements:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        time.sleep(0.3)  # every process's last dump
        self._stop.set()
        self._thread.join(2)
        self._read()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._read()

    def _read(self) -> None:
        for pid, payload in read_counts(self.count_dir).items():
            if pid != self.parent_pid and not is_worker(payload, self.parent_pid):
                continue
            recent = payload.get("recent") or []
            if not recent:
                continue
            known = self._newest.get(pid)
            if known is not None and recent[0][0] > known and len(recent) >= RECENT:
                self.gaps.add(pid)
            self._newest[pid] = max(known or 0.0, recent[-1][0])
            for started, took, sql in recent:
                self.events.add((started, took, pid, sql))

    def timeline(
        self, start: float, end: float, zero: float, marks: list[tuple[float, str]]
    ) -> list[dict[str, Any]]:
        """What the runner executed from ``start`` to ``end``, with ``marks``; times in ms
        after ``zero``."""
        names = {self.parent_pid: "parent", **self.worker_names()}
        rows = [
            (t, took, names.get(pid, str(pid)), sql)
            for t, took, pid, sql in self.events
            if start <= t <= end
        ]
        rows += [(t, 0.0, "", f"-- {text}") for t, text in marks]
        rows.sort()
        if len(rows) > TIMELINE_ROWS:
            rows = rows[: TIMELINE_ROWS // 2] + [(0, 0, "…", "…")] + rows[-TIMELINE_ROWS // 2 :]
        return [
            {
                "at_ms": (t - zero) * 1000 if who != "…" else None,
                "ms": took * 1000,
                "who": who,
                "sql": sql,
            }
            for t, took, who, sql in rows
        ]

    def tally(self, start: float, end: float) -> list[tuple[str, str, int]]:
        """How many times each process executed each statement from ``start`` to ``end``."""
        names = {self.parent_pid: "parent", **self.worker_names()}
        counts = Counter(
            (names.get(pid, str(pid)), sql) for t, _, pid, sql in self.events if start <= t <= end
        )
        return [(who, sql, k) for (who, sql), k in sorted(counts.items(), key=lambda x: -x[1])]

    def worker_names(self) -> dict[int, str]:
        names: dict[int, str] = {}
        for pid in sorted({e[2] for e in self.events} - {self.parent_pid}):
            names[pid] = f"worker {len(names) + 1}"
        return names


# ---------------------------------------------------------------------------- measurements


def warm_up(proc: subprocess.Popen) -> float:
    """:data:`WARMUP_CALLS` delayed calls (the workers import the task and take the delayed
    path once); the client's seconds per ``apply_async``."""
    started = time.time()
    ids, returned = submit(WARMUP_CALLS, 0, countdown=0.5)
    per_call = (returned[-1] - started) / WARMUP_CALLS
    wait_final(ids, proc, 60)
    records(ids)
    return per_call


def same_instant(
    args: argparse.Namespace, proc: subprocess.Popen, count_dir: Path, per_call: float
) -> dict[str, Any]:
    n = args.same_instant
    lead = max(args.min_lead, n * per_call * 1.5 + 2.0)
    due = time.time() + lead
    t0 = time.time()
    ids, returned = submit(n, 100_000, eta=at(due))
    submitted_s = time.time() - t0
    log(
        f"  same instant: {n} submitted in {submitted_s:.1f} s, {due - time.time():.1f} s before due"
    )
    sleep_until(due - 0.5)
    before = read_counts(count_dir)
    with RecentStatements(count_dir, proc.pid) as recent:
        sleep_until(due)
        wait_final(ids, proc, args.timeout)
    spent = role_delta(before, read_counts(count_dir), proc.pid)
    recs = records(ids)
    starts = sorted(r["start"] for r in recs)
    delays = [(s - due) * 1000 for s in starts]
    first = min(recs, key=lambda r: r["start"])
    names = recent.worker_names()
    return {
        "n": n,
        "lead_s": lead,
        "submitted_s": submitted_s,
        "ahead_of_due_s": due - returned[-1],
        "late_submits": sum(t > due for t in returned),
        "delay_ms": stats(delays),
        "drain_s": max(r["final_at"] for r in recs) - due,
        "start_span_s": starts[-1] - starts[0],
        "per_worker": {
            names.get(pid, str(pid)): k for pid, k in Counter(r["pid"] for r in recs).items()
        },
        "timeline": recent.timeline(
            due - 0.02,
            first["start"] + 0.002,
            due,
            [
                (due, "due time"),
                (first["start"], f"first task started ({names.get(first['pid'], first['pid'])})"),
            ],
        ),
        "worker_statements_per_invocation": spent["workers"] / n,
        "until_first_start": recent.tally(due, first["start"]),
        "recent_gaps": len(recent.gaps),
    }


def staggered(
    args: argparse.Namespace, proc: subprocess.Popen, count_dir: Path, per_call: float
) -> dict[str, Any]:
    n, spacing = args.staggered, args.spacing_ms / 1000
    lead = max(args.min_lead, n * per_call * 1.5 + 1.5)
    base = time.time() + lead

    def due_of(i: int) -> float:
        return base + i * spacing

    t0 = time.time()
    ids, returned = submit(n, 200_000, eta=lambda i: at(due_of(i)))
    submitted_s = time.time() - t0
    log(
        f"  staggered: {n} submitted in {submitted_s:.1f} s, {base - time.time():.1f} s before the first is due"
    )
    sleep_until(base - 0.5)
    before = read_counts(count_dir)
    with RecentStatements(count_dir, proc.pid) as recent:
        sleep_until(due_of(n - 1))
        wait_final(ids, proc, args.timeout)
    spent = role_delta(before, read_counts(count_dir), proc.pid)
    recs = records(ids)
    for i, r in enumerate(recs):
        r["due"] = due_of(i)
        r["delay_ms"] = (r["start"] - r["due"]) * 1000
    delays = [r["delay_ms"] for r in recs]
    names = recent.worker_names()
    ordered = sorted(recs, key=lambda r: r["delay_ms"])
    picks = {"median": ordered[len(ordered) // 2], "slowest": ordered[-1]}
    timelines = {}
    for label, r in picks.items():
        who = names.get(r["pid"], str(r["pid"]))
        timelines[label] = {
            "delay_ms": r["delay_ms"],
            "rows": recent.timeline(
                r["due"] - 0.005,
                r["start"] + 0.002,
                r["due"],
                [(r["due"], "due time"), (r["start"], f"task started ({who})")],
            ),
        }
    return {
        "n": n,
        "spacing_ms": args.spacing_ms,
        "lead_s": lead,
        "submitted_s": submitted_s,
        "late_submits": sum(t > due_of(i) for i, t in enumerate(returned)),
        "early_starts": sum(d < 0 for d in delays),
        "delay_ms": stats(delays),
        "over_spacing": sum(d > args.spacing_ms for d in delays),
        "worker_statements_per_invocation": spent["workers"] / n,
        "top_worker_sql": spent["top_worker_sql"],
        "per_worker": {
            names.get(pid, str(pid)): k for pid, k in Counter(r["pid"] for r in recs).items()
        },
        "timelines": timelines,
        "recent_gaps": len(recent.gaps),
        "delays_ms": delays,
    }


def role_delta(
    before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]], parent_pid: int
) -> dict[str, Any]:
    """Statements of the parent and of the workers between two snapshots, and the workers'
    most frequent ones."""
    totals = {"parent": 0, "workers": 0}
    by_sql: Counter[str] = Counter()
    for pid, end in after.items():
        role = "parent" if pid == parent_pid else "workers" if is_worker(end, parent_pid) else None
        if role is None:
            continue
        start = before.get(pid, {"django_total": 0, "django": {}})
        totals[role] += end["django_total"] - start["django_total"]
        if role == "workers":
            for sql, k in end["django"].items():
                if k - start["django"].get(sql, 0):
                    by_sql[sql] += k - start["django"].get(sql, 0)
    return {**totals, "top_worker_sql": by_sql.most_common(6)}


def idle_cost(args: argparse.Namespace, proc: subprocess.Popen, count_dir: Path) -> dict[str, Any]:
    from pynenc_django import app

    time.sleep(args.settle_seconds)
    log(f"  idle: {args.idle_seconds:g} s window, nothing delayed")
    baseline = idle_window(count_dir, proc.pid, args.idle_seconds, "django")
    n = args.delayed_idle
    before = read_counts(count_dir)
    t0 = time.time()
    ids, _ = submit(n, 300_000, countdown=3600)
    submitted_s = time.time() - t0
    time.sleep(1.0)  # the workers' reactions to the last submits, and their counts' dumps
    during = role_delta(before, read_counts(count_dir), proc.pid)
    during["seconds"] = time.time() - t0
    time.sleep(max(0.0, args.settle_seconds - 1.0))
    log(
        f"  idle: {n} delayed an hour ahead (submitted in {submitted_s:.1f} s); {args.idle_seconds:g} s window"
    )
    waiting = idle_window(count_dir, proc.pid, args.idle_seconds, "django")
    from pynenc_django.models import Invocation

    started = (
        Invocation.objects.for_app(app.app_id)
        .filter(invocation_id__in=ids, status__in=[*FINAL_STATUSES, "running"])
        .count()
    )
    return {
        "baseline": baseline,
        "delayed": waiting,
        "delayed_n": n,
        "submitted_s": submitted_s,
        "during_submit": during,
        "still_delayed": app.broker.count_delayed(),  # type: ignore[attr-defined]
        "started_early": started,
    }


def measure_database(db: str, args: argparse.Namespace, out: Path) -> int:
    """Every scenario on one database, in this process; JSON to ``out``."""
    work = Path(tempfile.mkdtemp(prefix=f"pynenc-delayed-{db}-"))
    url = "" if db == "sqlite" else with_db_name(getattr(args, f"{db}_url"), DB_NAME)
    sqlite_path = work / f"{DB_NAME}.sqlite3"
    env = {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_DATABASE_URL": url,
        "BENCH_SQLITE_PATH": str(sqlite_path),
        "BENCH_CONN_MAX_AGE": str(args.conn_max_age),
        "BENCH_PYNENC_LOG_LEVEL": LOG_LEVEL,
    }
    payload: dict[str, Any] = {"database": db, "server": None, "error": None}
    code = 0
    created = False
    proc: subprocess.Popen | None = None
    try:
        with terminate_as_interrupt():
            if url:
                check_server(db, url)
            log(f"{db}: recreating {DB_NAME} and migrating")
            recreate_database(db, url, sqlite_path)
            created = True
            subprocess.run(
                [sys.executable, str(MANAGE), "migrate", "--noinput", "-v", "0"],
                env=child_env(env),
                check=True,
                cwd=REPO,
            )
            os.environ.update(env)
            os.environ.pop(COUNT_DIR_ENV, None)  # the runner's statements only
            os.environ["PYNENC__LOGGING_LEVEL"] = LOG_LEVEL
            import django

            django.setup()
            payload["server"] = server_version(db)
            count_dir = work / "counts"
            count_dir.mkdir()
            log_path = work / "runner.log"
            cmd = [sys.executable, str(MANAGE), "pynenc_runner", "--processes", str(args.processes)]
            cmd += ["--log-level", LOG_LEVEL]
            proc = start_process(cmd, {**child_env(env), COUNT_DIR_ENV: str(count_dir)}, log_path)
            log(f"{db}: runner pid {proc.pid}, waiting for {args.processes} workers")
            wait_for_workers(proc, count_dir, args.processes, log_path, "django")
            tree = process_tree(proc.pid)
            per_call = warm_up(proc)
            payload["apply_async_ms"] = per_call * 1000
            time.sleep(args.settle_seconds)
            log(f"{db}: workers up and warm ({per_call * 1000:.1f} ms per apply_async)")
            payload["same_instant"] = same_instant(args, proc, count_dir, per_call)
            log(f"{db}: same instant {fmt_delays(payload['same_instant']['delay_ms'])}")
            time.sleep(args.settle_seconds)
            payload["staggered"] = staggered(args, proc, count_dir, per_call)
            log(f"{db}: staggered {fmt_delays(payload['staggered']['delay_ms'])}")
            payload["idle"] = idle_cost(args, proc, count_dir)
            payload["runner_log"] = runner_log_summary(log_path)  # before the stop's warnings
            tree = sorted(set(tree) | set(process_tree(proc.pid)))
            payload["stop"] = stop_process(proc, tree)
            payload["stop"]["other_db_sessions"] = other_sessions(db)
    except KeyboardInterrupt:
        payload["error"], code = "interrupted", 130
    except (Exception, SystemExit) as exc:  # check_server exits with its one line
        payload["error"], code = f"{type(exc).__name__}: {exc}", 1
        log(f"{db}: {payload['error']}")
    finally:
        if proc is not None and proc.poll() is None:
            kill_group(proc)
        if proc is not None and "runner_log" not in payload:
            payload["runner_log"] = runner_log_summary(work / "runner.log")
        out.write_text(json.dumps(payload, indent=2, default=str))
        if created and not args.keep_db:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            with contextlib.suppress(Exception):
                recreate_database(db, url, sqlite_path, drop_only=True)
        shutil.rmtree(work, ignore_errors=True)
    return code


# ---------------------------------------------------------------------------- the report


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def fmt_delays(d: dict[str, float]) -> str:
    return f"p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms"


def rate(value: float) -> str:
    return f"{value:,.2f}"


def md(text: str) -> str:
    return text.replace("|", "\\|")


def summary_rows(results: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"| database | {args.same_instant:,} due at one instant: start delay first / p50 / p99 "
        f"/ max (ms) | drain (s) | {args.staggered:,} staggered by {args.spacing_ms:g} ms: "
        "start delay p50 / p99 / max (ms) "
        f"| idle stmts/s, parent: none / {args.delayed_idle:,} delayed "
        f"| idle stmts/s, workers (sum of {args.processes}): none / {args.delayed_idle:,} delayed |",
        "|---|---|---:|---|---|---|",
    ]
    for r in results:
        name = r["server"] or r["database"]
        if r.get("error") and "idle" not in r:
            lines.append(f"| {name} | failed: {md(r['error'])} | | | | |")
            continue
        si, st, idle = r["same_instant"], r["staggered"], r["idle"]
        d1, d2 = si["delay_ms"], st["delay_ms"]
        b, w = idle["baseline"], idle["delayed"]
        lines.append(
            f"| {name} | {ms(d1['min'])} / {ms(d1['p50'])} / {ms(d1['p99'])} / {ms(d1['max'])} "
            f"| {si['drain_s']:.2f} | {ms(d2['p50'])} / {ms(d2['p99'])} / {ms(d2['max'])} "
            f"| {rate(b['parent'])} / {rate(w['parent'])} "
            f"| {rate(b['worker_mean'] * b['workers'])} / {rate(w['worker_mean'] * w['workers'])} |"
        )
    return lines


def same_instant_rows(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| database | submitted (s) | last submit before due (s) | first start (ms) | p50 (ms) "
        "| p99 (ms) | max (ms) | drain (s) | invocations/s (first to last start) "
        "| worker statements per invocation | per worker |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if "same_instant" not in r:
            continue
        s = r["same_instant"]
        d = s["delay_ms"]
        late = f" ({s['late_submits']} after due)" if s["late_submits"] else ""
        lines.append(
            f"| {r['database']} | {s['submitted_s']:.1f} | {s['ahead_of_due_s']:.1f}{late} "
            f"| {ms(d['min'])} | {ms(d['p50'])} | {ms(d['p99'])} | {ms(d['max'])} "
            f"| {s['drain_s']:.2f} | {s['n'] / s['start_span_s']:,.0f} "
            f"| {s['worker_statements_per_invocation']:.1f} "
            f"| {', '.join(f'{k}: {v}' for k, v in sorted(s['per_worker'].items()))} |"
        )
    return lines


def staggered_rows(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| database | min (ms) | p50 (ms) | p99 (ms) | max (ms) | later than the spacing "
        "| started before due | submitted after due | worker statements per invocation "
        "| per worker |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if "staggered" not in r:
            continue
        s = r["staggered"]
        d = s["delay_ms"]
        lines.append(
            f"| {r['database']} | {ms(d['min'])} | {ms(d['p50'])} | {ms(d['p99'])} | {ms(d['max'])} "
            f"| {s['over_spacing']} | {s['early_starts']} | {s['late_submits']} "
            f"| {s['worker_statements_per_invocation']:.1f} "
            f"| {', '.join(f'{k}: {v}' for k, v in sorted(s['per_worker'].items()))} |"
        )
    return lines


def idle_rows(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| database | window | parent stmts/s | workers stmts/s (sum) | per worker max "
        "| worker CPU max | parent CPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "idle" not in r:
            continue
        i = r["idle"]
        for label, w in (
            ("nothing delayed", i["baseline"]),
            (f"{i['delayed_n']:,} delayed 1 h ahead", i["delayed"]),
        ):
            lines.append(
                f"| {r['database']} | {label} ({w['seconds']:.0f} s) | {rate(w['parent'])} "
                f"| {rate(w['worker_mean'] * w['workers'])} | {rate(w['worker_max'])} "
                f"| {ms(w['worker_cpu_max'])} % | {ms(w['parent_cpu'])} % |"
            )
    return lines


def submit_rows(results: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"| database | apply_async (ms per call, warm-up) | {args.delayed_idle:,} submitted (s) "
        "| worker statements "
        "meanwhile (per submit) | parent statements | still delayed after the window "
        "| started early |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "idle" not in r:
            continue
        i = r["idle"]
        d = i["during_submit"]
        lines.append(
            f"| {r['database']} | {r['apply_async_ms']:.1f} | {i['submitted_s']:.1f} "
            f"| {d['workers']:,} ({d['workers'] / i['delayed_n']:.2f}) | {d['parent']:,} "
            f"| {i['still_delayed']:,} | {i['started_early']} |"
        )
    return lines


def timeline_lines(title: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [title, "", "| at ms | took ms | process | statement |", "|---:|---:|---|---|"]
    for row in rows:
        when = "…" if row["at_ms"] is None else f"{row['at_ms']:+.1f}"
        took = "" if row["who"] in ("", "…") else f"{row['ms']:.1f}"
        lines.append(f"| {when} | {took} | {row['who']} | `{md(row['sql'][:120])}` |")
    return [*lines, ""]


def detail_lines(r: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = [f"### {r['server'] or r['database']}", ""]
    if r.get("error"):
        lines += [f"**Error**: {md(r['error'])}", ""]
    if "same_instant" in r:
        lines += timeline_lines(
            f"{args.same_instant:,} at one instant, the first start: what the runner executed from 20 ms "
            "before the due time (times in ms after it):",
            r["same_instant"]["timeline"],
        )
        lines += [
            "The same, counted: statements per process from the due time to the first start:",
            "",
            "| process | times | statement |",
            "|---|---:|---|",
        ]
        lines += [
            f"| {who} | {k} | `{md(sql[:120])}` |"
            for who, sql, k in r["same_instant"]["until_first_start"][:12]
        ]
        lines += [""]
    if "staggered" in r:
        for label, t in r["staggered"]["timelines"].items():
            lines += timeline_lines(
                f"Staggered, the {label} invocation (start delay {t['delay_ms']:.1f} ms): what "
                "the runner executed from 5 ms before its due time:",
                t["rows"],
            )
        st = r["staggered"]
        lines += [
            f"Staggered, what the workers executed per invocation "
            f"({st['worker_statements_per_invocation']:.1f} in all, both workers):",
            "",
            "| per invocation | statement |",
            "|---:|---|",
        ]
        lines += [f"| {k / st['n']:.2f} | `{md(sql[:120])}` |" for sql, k in st["top_worker_sql"]]
        lines += [""]
        gaps = r["staggered"]["recent_gaps"] + r["same_instant"]["recent_gaps"]
        if gaps:
            lines += [f"(statements missed by the collector in {gaps} process buffers)", ""]
    if "idle" in r:
        i = r["idle"]
        windows = (
            ("nothing delayed", i["baseline"]),
            (f"{i['delayed_n']:,} delayed", i["delayed"]),
        )
        for label, w in windows:
            for who, key in (("workers'", "top_worker_sql"), ("the parent's", "top_parent_sql")):
                lines += [f"Idle, {label}: {who} statements/s (workers: mean per worker):", ""]
                lines += ["| /s | statement |", "|---:|---|"]
                lines += [f"| {v:,.2f} | `{md(sql[:120])}` |" for v, sql in w[key][:6]]
                lines += [""]
        lines += [
            f"While the {i['delayed_n']:,} were submitted, the workers executed (all workers):",
            "",
        ]
        lines += ["| statements | statement |", "|---:|---|"]
        lines += [
            f"| {k:,} | `{md(sql[:120])}` |" for sql, k in i["during_submit"]["top_worker_sql"]
        ]
        lines += [""]
    if stop := r.get("stop"):
        lines += [
            f"Runner stop: exit code {stop['exit_code']} after {stop['stop_sec']:.2f} s, "
            f"leftover processes {stop['leftover_pids'] or 'none'}, leftover sessions "
            f"{stop.get('other_db_sessions')}.",
            "",
        ]
    logged = r.get("runner_log") or {}
    if logged.get("warnings"):
        text, k = logged["most_frequent"][0]
        lines += [
            f"Runner warnings: {logged['warnings']:,} lines, {k:,} of them `{md(text[:300])}`",
            "",
        ]
    return lines


def code_state() -> dict[str, Any]:
    """The commit, and the package's files that differ from it (a shared work tree), with
    their modification times: a file changed during the run means mixed code."""

    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip()

    changed = [
        line[3:] for line in git("status", "--porcelain", "--", "pynenc_django").splitlines()
    ]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed": {
            path: (REPO / path).stat().st_mtime for path in changed if (REPO / path).is_file()
        },
        "mtimes": {
            str(p.relative_to(REPO)): p.stat().st_mtime
            for p in (REPO / "pynenc_django").rglob("*.py")
        },
    }


def code_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    if not before["commit"]:
        return [f"- Code: {REPO} (not a git work tree)"]
    lines = [f"- Code: commit {before['commit']}"]
    if before["changed"]:
        lines[0] += (
            f", with uncommitted changes in {len(before['changed'])} file(s) of pynenc_django/ "
            f"({', '.join(sorted(before['changed']))})"
        )
    moved = sorted(path for path, t in after["mtimes"].items() if before["mtimes"].get(path) != t)
    if after["commit"] != before["commit"]:
        lines.append(f"- **The commit changed during the run** (to {after['commit']})")
    if moved:
        lines.append(
            f"- **pynenc_django/ files changed during the run** (a shared work tree: the "
            f"databases may have run different code): {', '.join(moved)}"
        )
    return lines


def render(
    results: list[dict[str, Any]],
    args: argparse.Namespace,
    argv: list[str],
    date: str,
    code: tuple[dict[str, Any], dict[str, Any]],
) -> str:
    v = versions()
    servers = ", ".join(r["server"] for r in results if r["server"])
    pg = next((r for r in results if r["database"] == "postgresql" and "staggered" in r), None)
    target = ""
    if pg is not None:
        p99 = pg["staggered"]["delay_ms"]["p99"]
        met = "met" if p99 < STAGGERED_TARGET_P99_MS else "**not met**"
        target = f"PostgreSQL staggered p99 {p99:.1f} ms (target < {STAGGERED_TARGET_P99_MS:g} ms): {met}."
    lines = [
        f"# Delayed invocations, {date}",
        "",
        "Produced by `bench/delayed.py` (see `bench/README.md` for the method).",
        "",
        f"- Machine: {v['cores']} cores ({v['cpu']}), {v['os']}; the client, the runner and "
        "the database servers share it, and other test suites may too: compare figures of one run",
        f"- Python {v['python']}, Django {v['django']}, pynenc {v['pynenc']}, "
        f"pynenc-django {v['pynenc-django']}, psycopg {v['psycopg']}, mysqlclient {v['mysqlclient']}",
        f"- Database servers: {servers or '–'}",
        *code_lines(code[0], code[1]),
        f"- One runner per database: `bench/manage.py pynenc_runner --processes {args.processes} "
        f"--log-level warning`, CONN_MAX_AGE {args.conn_max_age}, pynenc-django's defaults "
        "(django_notify_safety_poll_sec 10, django_idle_wait_max_sec 1.0, "
        "runner_loop_sleep_time_sec 0.1), idle before each scenario",
        "- Task: `started_at(i)` returns `[time.time(), pid]` as it starts. Start delay = that "
        "time minus the invocation's due time (`eta`); client, runner and server share one clock",
        "",
        "## Summary",
        "",
        *summary_rows(results, args),
        "",
        *([target, ""] if target else []),
        f"## 1. {args.same_instant:,} invocations due at one instant",
        "",
        f"`started_at.apply_async(args=(i,), eta=T)` {args.same_instant:,} times, one `T` a few "
        f"seconds after the last submit, the {args.processes} workers idle. Start delay after `T` "
        "of each invocation, from the tasks' own start times; drain = the last final status "
        "(its `status_timestamp`) minus `T`. **Throughput-bound**: the first start is the "
        f"wake-up; with {args.processes} workers, the p50, p99 and max are mostly queueing "
        f"behind the other invocations (the p99 is the ~{int(args.same_instant * 0.99)}th start "
        "in line), i.e. the drain rate, not the wake-up.",
        "",
        *same_instant_rows(results),
        "",
        f"## 2. {args.staggered} invocations due {args.spacing_ms:g} ms apart",
        "",
        f"Due at `T + i × {args.spacing_ms:g} ms`, all submitted before `T`; start delay after "
        "each one's own due time: the per-invocation wake-up latency (target on PostgreSQL: "
        f'p99 < {STAGGERED_TARGET_P99_MS:g} ms). "Later than the spacing": invocations that '
        "started more than one spacing after their due time (then the next one was due first).",
        "",
        *staggered_rows(results),
        "",
        "## 3. Idle cost while invocations wait",
        "",
        f"Statements per second of the runner parent and of its workers (every statement "
        f"through Django, as `bench/runner_idle_wake.py` counts them) over {args.idle_seconds:g} s "
        f"with nothing delayed, then over {args.idle_seconds:g} s with {args.delayed_idle:,} "
        "invocations `apply_async(countdown=3600)` waiting "
        f"({args.settle_seconds:g} s after the last submit).",
        "",
        *idle_rows(results),
        "",
        "The submits themselves: every delayed submit is announced (`NOTIFY` with its due time "
        "on PostgreSQL, the due signal file on SQLite and, for this host's submits, on MariaDB), "
        f"so idle workers react to it. What they executed while the {args.delayed_idle:,} were submitted "
        "(and 1 s after):",
        "",
        *submit_rows(results, args),
        "",
        "## Where the time goes",
        "",
        "Statements of the runner's processes (start time after the due time, duration), from "
        "their recent-statement buffers (`bench/benchapp/counting.py`); transaction control done "
        "by the driver (BEGIN/COMMIT of `atomic()` on the servers) is not a statement there.",
        "",
    ]
    for r in results:
        lines += detail_lines(r, args)
    lines += [
        "## Reproduce",
        "",
        "```console",
        shlex.join([".venv/bin/python", "bench/delayed.py", *argv]),
        "```",
    ]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default=",".join(DATABASES))
    parser.add_argument("--processes", type=int, default=2, help="workers of the runner")
    parser.add_argument("--same-instant", type=int, default=1000, help="invocations due at one T")
    parser.add_argument("--staggered", type=int, default=200, help="invocations due one by one")
    parser.add_argument("--spacing-ms", type=float, default=20, help="between staggered due times")
    parser.add_argument("--delayed-idle", type=int, default=1000, help="delayed an hour ahead")
    parser.add_argument("--idle-seconds", type=float, default=20, help="each idle window")
    parser.add_argument("--settle-seconds", type=float, default=3, help="idle before a scenario")
    parser.add_argument("--min-lead", type=float, default=2, help="due at least this far ahead")
    parser.add_argument("--timeout", type=float, default=120, help="per scenario, to drain")
    parser.add_argument("--conn-max-age", type=int, default=60, help="CONN_MAX_AGE (as make bench)")
    parser.add_argument("--postgres-url", dest="postgresql_url", default=SERVER_URLS["postgresql"])
    parser.add_argument("--mariadb-url", dest="mariadb_url", default=SERVER_URLS["mariadb"])
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench databases")
    parser.add_argument("--output", type=Path, help="markdown file (default: bench/results/)")
    parser.add_argument("--_measure", dest="measure", choices=DATABASES, help=argparse.SUPPRESS)
    parser.add_argument("--_out", dest="out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not args.databases or set(args.databases) - set(DATABASES):
        parser.error(f"--databases: comma-separated, from {', '.join(DATABASES)}")
    sizes = (args.processes, args.same_instant, args.staggered, args.delayed_idle)
    if min(sizes) < 1 or min(args.spacing_ms, args.idle_seconds, args.timeout) <= 0:
        parser.error("counts, --spacing-ms, --idle-seconds and --timeout must be positive")
    if args.settle_seconds < 1:
        parser.error("--settle-seconds must be at least 1")
    return args


def measure_all(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """One subprocess per database, one after the other; what each wrote."""
    results = []
    with tempfile.TemporaryDirectory(prefix="pynenc-delayed-") as tmp:
        for db in args.databases:
            out = Path(tmp) / f"{db}.json"
            cmd = [sys.executable, __file__, *argv, "--_measure", db, "--_out", str(out)]
            # Own session: Ctrl-C stops this process, which then stops the whole tree.
            proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
            problem = None
            limit = 600 + 3 * args.timeout
            try:
                code = proc.wait(limit)
                if code != 0:
                    problem = f"its subprocess exited with {code}"
            except subprocess.TimeoutExpired:
                problem = f"its subprocess overran {limit:.0f} s"
                kill_tree(proc)
            except KeyboardInterrupt:
                kill_tree(proc)
                raise
            try:
                payload = json.loads(out.read_text())
            except (OSError, ValueError):
                payload = {"database": db, "server": None}
            payload["error"] = payload.get("error") or problem
            results.append(payload)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.measure:
        return measure_database(args.measure, args, args.out)
    started = time.monotonic()
    try:
        with terminate_as_interrupt():
            code_before = code_state()
            results = measure_all(args, argv)
            code_after = code_state()
    except KeyboardInterrupt:
        log("interrupted: no report written")
        return 130
    date = dt.date.today().isoformat()
    report = render(results, args, argv, date, (code_before, code_after))
    output = args.output or RESULTS_DIR / f"{date}-delayed.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    raw = RESULTS_DIR / "raw" / f"delayed-{date}-{time.strftime('%H%M%S')}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(
        json.dumps(
            {
                "args": vars(args) | {"output": str(output)},
                "code": {"before": code_before, "after": code_after},
                "results": results,
            },
            default=str,
        )
    )
    print(report)
    log(f"results written to {output} (raw: {raw}) in {time.monotonic() - started:.0f} s")
    failed = [r["database"] for r in results if r.get("error")]
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
