"""Fan-in: parents waiting for their children, pynenc-django's runner against pynenc's ProcessRunner.

    .venv/bin/python bench/fan_in.py [--databases sqlite,postgresql,mariadb]
        [--runners ours,process] [--variants group,sequential] [--parents 200]
        [--children 10] [--workers 2] [--runs 3] [--timeout 120]

Workload (``bench/benchapp/fan_in_tasks.py``): ``child(i)`` returns ``2 * i``;
``parent(n, k)`` submits its ``n`` children with ``child.parallelize`` and returns
``sum(group.results)`` (variant ``group``); ``parent_sequential(n, k)`` submits them one by
one and sums ``inv.result`` in turn (variant ``sequential``). This process is the client: it
submits every parent at once (``parallelize``), then reads every parent's result through the
group and checks them.

Runners, both ``bench/manage.py pynenc_runner`` on the same Django backends and database:

* ``ours``: ``--processes W``, DjangoPersistentProcessRunner (pynenc-django's default);
* ``process``: ``--processes W --runner ProcessRunner``, pynenc's runner that forks a
  process per invocation and pauses (SIGSTOP) one that waits. It ignores ``--processes``
  and ``max_processes``: its slots are ``max(min_parallel_slots, cpu_count())``, so its
  runner gets ``PYTHON_CPU_COUNT=W`` (Python 3.13+) for W slots.

For each database, in a fresh subprocess (Django is set up once per process), per run, per
variant, per runner: a fresh database (``pynenc_django_bench_fanin`` dropped and recreated on
the servers, a new file on SQLite) and a new runner; one ``child`` round trip shows it takes
work, then it idles ``--settle-seconds``; then the clock runs from the first submit to the
last parent result. A measurement not done after ``--timeout`` seconds (a runner whose
waiting parents hold every worker never finishes) is recorded as not finished, with the
parents done by then; the runner's whole process tree is killed after every measurement.

Results: ``bench/results/fan-in-<date>.md`` and the raw JSON under ``bench/results/raw/``
(git-ignored). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# Run as a script, sys.path[0] is bench/ and ``import bench`` would find bench/bench.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.bench import kill_tree  # noqa: E402
from bench.runner_idle_wake import (  # noqa: E402
    RESULTS_DIR,
    alive,
    log,
    process_tree,
    start_process,
    versions,
)
from bench.throughput import (  # noqa: E402
    Deadline,
    DjangoSystem,
    check_server,
    drop_database,
    terminate_as_interrupt,
    with_db_name,
)

DB_NAME = "pynenc_django_bench_fanin"
DATABASES = ("sqlite", "postgresql", "mariadb")
SERVER_URLS = {
    "postgresql": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "mariadb": f"mysql://root@127.0.0.1:3306/{DB_NAME}",
}
RUNNERS = {
    "ours": "pynenc-django DjangoPersistentProcessRunner",
    "process": "pynenc ProcessRunner",
}
VARIANTS = {"group": "parent", "sequential": "parent_sequential"}
VARIANT_LABELS = {
    "group": "`sum(child.parallelize(...).results)`",
    "sequential": "`sum(inv.result for inv in [child(i) ...])`",
}
PROBE_TIMEOUT = 60.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Times, invocation and runner ids: folded, so that equal warnings group.
VOLATILE = re.compile(
    r"\d{4}-\d\d-\d\d[ T][\d:.+]+|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}|\b[0-9a-f]{8}\b"
)


# ---------------------------------------------------------------------------- the runner


def runner_command(
    system: DjangoSystem, runner: str, workers: int
) -> tuple[list[str], dict[str, str]]:
    """``manage.py pynenc_runner --processes W`` (log level warning), and for pynenc's
    ProcessRunner ``--runner ProcessRunner`` with W CPUs as far as Python can tell."""
    cmd, env = system.runner_command(workers)
    if runner == "process":
        cmd += ["--runner", "ProcessRunner"]
        # ProcessRunner._on_start sets max_processes = multiprocessing.cpu_count(), whatever
        # the configuration says; Python 3.13+ reads the CPU count from here.
        env["PYTHON_CPU_COUNT"] = str(workers)
    return cmd, env


def process_runner_slots(workers: int) -> int:
    """How many invocations ProcessRunner runs at once here (paused ones included)."""
    if sys.version_info >= (3, 13):
        return workers
    return max(1, os.cpu_count() or 1)  # PYTHON_CPU_COUNT is ignored before 3.13


@contextlib.contextmanager
def runner_process(
    cmd: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen]:
    """The runner in its own session; its whole process tree killed on the way out
    (``kill_tree``: SIGTERM to every process, SIGKILL 10 s later; paused processes only
    die of the SIGKILL)."""
    proc = start_process(cmd, env, log_path)
    try:
        yield proc
    finally:
        tree = process_tree(proc.pid)
        kill_tree(proc)
        if left := alive(tree):
            log(f"runner processes left after kill_tree: {left}")


def runner_log_summary(path: Path) -> dict[str, Any]:
    """The runner's warnings and errors (how many, the most frequent with ids and times
    folded) and its last lines. pynenc logs at warning: a healthy runner logs nothing."""
    counts: Counter[str] = Counter()
    tail: deque[str] = deque(maxlen=20)
    with contextlib.suppress(OSError), open(path, errors="replace") as lines:
        for raw in lines:
            line = ANSI.sub("", raw.rstrip("\n"))
            tail.append(line)
            if " WARNING " in line or " ERROR " in line or line.startswith("Traceback"):
                counts[VOLATILE.sub("<id>", line)[:400]] += 1
    return {
        "warnings": sum(counts.values()),
        "most_frequent": counts.most_common(3),
        "tail": "\n".join(tail),
    }


class TaskProcesses:
    """Samples the runner's process tree every ``every`` s: the most processes alive beyond
    those of the idle runner (ProcessRunner forks one per invocation; pynenc-django's
    workers are there from the start), and the most of them paused (SIGSTOP) at once."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every = pid, every
        self.idle = set(process_tree(pid))
        self.peak = self.peak_paused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-fan-in", daemon=True)

    def __enter__(self) -> TaskProcesses:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(2)

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(self.every):
            statuses = []
            for pid in set(process_tree(self.pid)) - self.idle:
                with contextlib.suppress(psutil.Error):
                    statuses.append(psutil.Process(pid).status())
            running = [s for s in statuses if s != psutil.STATUS_ZOMBIE]
            self.peak = max(self.peak, len(running))
            self.peak_paused = max(
                self.peak_paused, sum(s == psutil.STATUS_STOPPED for s in running)
            )


# ---------------------------------------------------------------------------- measurements


def probe(proc: subprocess.Popen) -> str:
    """One ``child`` round trip: the runner is up and takes work. Its invocation id."""
    from bench.benchapp.fan_in_tasks import child

    with Deadline(PROBE_TIMEOUT, "probe", proc):
        invocation = child(-1)
        value = invocation.result
    if value != -2:
        raise RuntimeError(f"probe: child(-1) returned {value!r}")
    return str(invocation.invocation_id)


def statuses_by_role(
    parent_key: str, child_key: str, probe_id: str | None
) -> dict[str, dict[str, int]]:
    """Invocations per status of the parents and of the children (the database is fresh)."""
    from django.db import connections
    from django.db.models import Count

    from pynenc_django import app
    from pynenc_django.models import Invocation

    connections.close_all()  # an interrupt may have cut a statement short
    rows = (
        Invocation.objects.for_app(app.app_id)
        .exclude(invocation_id=probe_id or "")
        .values_list("task_id_key", "status")
        .annotate(n=Count("pk"))
    )
    out: dict[str, dict[str, int]] = {"parents": {}, "children": {}}
    for key, status, n in rows:
        role = "parents" if key == parent_key else "children" if key == child_key else None
        if role:
            out[role][status] = out[role].get(status, 0) + n
    return out


def final_count(statuses: dict[str, int]) -> int:
    from pynenc.invocation import InvocationStatus

    final = {s.value for s in InvocationStatus.get_final_statuses()}
    return sum(n for status, n in statuses.items() if status in final)


def measure_one(
    system: DjangoSystem, runner: str, variant: str, run: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """One measurement on a fresh database with a new, idle runner."""
    from bench.benchapp import fan_in_tasks as tasks

    task, parents, children = getattr(tasks, VARIANTS[variant]), args.parents, args.children
    entry: dict[str, Any] = {
        "run": run,
        "runner": runner,
        "variant": variant,
        "parents": parents,
        "children": children,
        "invocations": parents * (children + 1),
        "finished": False,
    }
    what = f"{system.vendor} run {run} {variant} {runner}"
    system.reset()
    cmd, env = runner_command(system, runner, args.workers)
    log_path = work / f"runner-{runner}-{variant}-{run}.log"
    with runner_process(cmd, env, log_path) as proc:
        deadline = Deadline(args.timeout, what, proc)
        sampler: TaskProcesses | None = None
        probe_id: str | None = None
        try:
            started = time.perf_counter()
            probe_id = probe(proc)
            entry["probe_s"] = round(time.perf_counter() - started, 3)
            time.sleep(args.settle_seconds)
            values: list[int] = []
            with TaskProcesses(proc.pid) as sampler:
                started = time.perf_counter()
                try:
                    with deadline:
                        group = task.parallelize([(children, k) for k in range(parents)])
                        entry["submit_s"] = round(time.perf_counter() - started, 3)
                        for value in group.results:
                            values.append(value)
                finally:
                    entry["wall_s"] = round(time.perf_counter() - started, 3)
            if Counter(values) != Counter(tasks.expected(children, k) for k in range(parents)):
                raise RuntimeError(f"wrong results: {len(values)} parents, sum {sum(values)}")
            entry["finished"] = True
            entry["invocations_per_s"] = round(entry["invocations"] / entry["wall_s"], 2)
        except Exception as exc:
            if (deadline.reason or "").startswith("not done after"):
                entry["timed_out"] = True
            else:
                entry["error"] = deadline.reason or f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # context, not the measurement
            statuses = statuses_by_role(task.task_id.key, tasks.child.task_id.key, probe_id)
            entry["statuses"] = statuses
            entry["parents_done"] = final_count(statuses["parents"])
            entry["children_done"] = final_count(statuses["children"])
        if sampler is not None:
            entry["peak_task_processes"] = sampler.peak
            entry["peak_paused_processes"] = sampler.peak_paused
        entry["runner_log"] = runner_log_summary(log_path)  # before the kill and its warnings
    log_path.unlink(missing_ok=True)  # a busy-looping runner writes megabytes per second
    log(f"{what}: {outcome(entry)}")
    return entry


def outcome(m: dict[str, Any]) -> str:
    if m["finished"]:
        return f"finished in {m['wall_s']:.2f} s, {m['invocations_per_s']:.1f} invocations/s"
    if m.get("timed_out"):
        return (
            f"did not finish ({m.get('parents_done', '?')} of {m['parents']} parents done "
            f"after {m['wall_s']:.0f} s)"
        )
    return f"error: {m.get('error')}"


def measure_database(db: str, args: argparse.Namespace, out: Path) -> int:
    """Every run, variant and runner on one database, in this process; JSON to ``out``,
    rewritten after each measurement."""
    work = Path(tempfile.mkdtemp(prefix=f"pynenc-fan-in-{db}-"))
    (work / "counts-client").mkdir()
    url = "" if db == "sqlite" else with_db_name(getattr(args, f"{db}_url"), DB_NAME)
    system = DjangoSystem(db, url, work, work / "counts-client", args.conn_max_age)
    payload: dict[str, Any] = {"database": db, "server": None, "measurements": [], "error": None}
    code = 0
    try:
        with terminate_as_interrupt():
            if url:
                check_server(db, url)
            system.setup_client()
            payload["server"] = system.database()
            for run in range(1, args.runs + 1):
                for variant in args.variants:
                    for runner in args.runners:
                        entry = measure_one(system, runner, variant, run, args, work)
                        payload["measurements"].append(entry)
                        out.write_text(json.dumps(payload, indent=2))
    except KeyboardInterrupt:
        payload["error"], code = "interrupted", 130
    except (Exception, SystemExit) as exc:  # check_server exits with its one line
        payload["error"], code = f"{type(exc).__name__}: {exc}", 1
        log(f"{db}: {payload['error']}")
    finally:
        out.write_text(json.dumps(payload, indent=2))
        if payload["server"] is not None:
            drop_database(system)
        shutil.rmtree(work, ignore_errors=True)
    return code


# ---------------------------------------------------------------------------- the report


def ratios(ours: list[dict[str, Any]], process: list[dict[str, Any]]) -> list[float]:
    """Our invocations/s over ProcessRunner's, per run where both finished."""
    theirs = {m["run"]: m for m in process if m["finished"]}
    return [
        m["invocations_per_s"] / theirs[m["run"]]["invocations_per_s"]
        for m in ours
        if m["finished"] and m["run"] in theirs
    ]


def not_finished(ms: list[dict[str, Any]]) -> str:
    """'did not finish (N of M parents done after T s)', once if every run says the same."""
    texts = {m["run"]: outcome(m) for m in ms if not m["finished"]}
    if len(set(texts.values())) == 1 and len(texts) > 1:
        return f"{next(iter(texts.values()))} in all {len(texts)} runs"
    return "; ".join(f"run {run}: {text}" if len(ms) > 1 else text for run, text in texts.items())


def runner_cells(ms: list[dict[str, Any]]) -> list[str]:
    """wall time, invocations/s: median (min–max) over the finished runs."""
    if not ms:
        return ["not measured", "–"]
    done = [m for m in ms if m["finished"]]
    wall = report.cell(report.stat(m["wall_s"] for m in done))
    rate = report.cell(report.stat(m["invocations_per_s"] for m in done))
    if len(done) < len(ms):
        wall = not_finished(ms) if not done else f"{wall}; {not_finished(ms)}"
    return [wall, rate]


def summary_rows(results: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = [
        "| database | parent waits with | pynenc-django runner: wall s | invocations/s "
        "| ProcessRunner: wall s | invocations/s | ours / ProcessRunner (invocations/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["error"] and not r["measurements"]:
            lines.append(f"| {r['database']} | – | {report.md_escape(r['error'])} | | | | |")
            continue
        for variant in args.variants:
            ms = [m for m in r["measurements"] if m["variant"] == variant]
            ours = [m for m in ms if m["runner"] == "ours"]
            process = [m for m in ms if m["runner"] == "process"]
            both = ratios(ours, process)
            ratio = report.cell(report.stat(both)) if both else "–"
            cells = [*runner_cells(ours), *runner_cells(process), ratio]
            lines.append(
                f"| {r['server'] or r['database']} | {VARIANT_LABELS[variant]} | "
                + " | ".join(report.md_escape(c) for c in cells)
                + " |"
            )
    return lines


def status_text(statuses: dict[str, dict[str, int]] | None) -> str:
    if not statuses:
        return "–"
    return "; ".join(
        f"{role}: " + ", ".join(f"{n} {s}" for s, n in sorted(by.items(), key=lambda x: -x[1]))
        for role, by in statuses.items()
        if by
    )


def detail_rows(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| database | waits | run | runner | outcome | submit s | parents done "
        "| children done | task processes, peak (paused) | runner warnings "
        "| statuses at the end |",
        "|---|---|---:|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        for m in r["measurements"]:
            peak = m.get("peak_task_processes")
            procs = "–" if peak is None else f"{peak} ({m.get('peak_paused_processes', 0)})"
            warnings = (m.get("runner_log") or {}).get("warnings")
            lines.append(
                f"| {r['database']} | {m['variant']} | {m['run']} | {m['runner']} "
                f"| {report.md_escape(outcome(m))} | {m.get('submit_s', '–')} "
                f"| {m.get('parents_done', '–')} | {m.get('children_done', '–')} | {procs} "
                f"| {'–' if warnings is None else f'{warnings:,}'} "
                f"| {status_text(m.get('statuses'))} |"
            )
    return lines


def warning_lines(results: list[dict[str, Any]]) -> list[str]:
    """The most frequent warning of every measurement whose runner logged any."""
    lines = []
    for r in results:
        for m in r["measurements"]:
            logged = m.get("runner_log") or {}
            if logged.get("most_frequent"):
                text, n = logged["most_frequent"][0]
                lines.append(
                    f"- {r['database']} {m['variant']} run {m['run']} {m['runner']}: "
                    f"{logged['warnings']:,} warning/error lines, {n:,} of them: `{text[:300]}`"
                )
    return lines


def render(
    results: list[dict[str, Any]], args: argparse.Namespace, argv: list[str], date: str
) -> str:
    v = versions()
    slots = process_runner_slots(args.workers)
    servers = ", ".join(r["server"] for r in results if r["server"])
    w = args.workers
    lines = [
        f"# Fan-in: parents waiting for their children, {date}",
        "",
        "Produced by `bench/fan_in.py` (see `bench/README.md` for the method).",
        "",
        f"- Machine: {v['cores']} cores ({v['cpu']}), {v['os']}; the client, the runner and "
        "the database servers share it, and other test suites may too: compare figures of "
        "one run",
        f"- Python {v['python']}, Django {v['django']}, pynenc {v['pynenc']}, "
        f"pynenc-django {v['pynenc-django']}, psycopg {v['psycopg']}, "
        f"mysqlclient {v['mysqlclient']}",
        f"- Database servers: {servers or '–'}",
        f"- Workload: {args.parents} parents × {args.children} children = "
        f"{args.parents * (args.children + 1):,} invocations per measurement; the client "
        "submits every parent with one `parent.parallelize(...)` and reads every parent's "
        "result through the group (each checked); `child(i)` returns `2 * i`",
        f"- W = {w}: `bench/manage.py pynenc_runner --processes {w}` for both runners, "
        f"pynenc logging at warning, CONN_MAX_AGE {args.conn_max_age}, pynenc-django's "
        "defaults otherwise",
        f"  - pynenc-django (DjangoPersistentProcessRunner): W = {w} worker processes, "
        "spawned when the runner starts and kept",
        "  - pynenc ProcessRunner (`--runner ProcessRunner`): a forked process per "
        "invocation, at most `max(min_parallel_slots, multiprocessing.cpu_count())` alive at "
        "once; it ignores `--processes` (`num_processes`/`max_processes`), so its runner "
        f"runs with `PYTHON_CPU_COUNT={w}`: {slots} slots"
        + ("" if slots == w else " (**not W**: PYTHON_CPU_COUNT needs Python 3.13)")
        + ". It is meant to pause (SIGSTOP) a process whose invocation waits for others; "
        "a paused process keeps its slot",
        f"- Each measurement: a fresh database, a new runner, one `child` round trip "
        f"(it takes work), {args.settle_seconds:g} s idle, then the clock from the first "
        f"submit to the last parent result; not done after {args.timeout:g} s = did not "
        "finish, the runner's process tree killed either way. Invocations/s = "
        "parents × (children + 1) / wall time",
        f"- {args.runs} run(s); in each, per workload, both runners one after the other "
        "(never at once)",
        "",
        "## Summary",
        "",
        "Median (min–max) over the runs that finished; the ratio is per run, where both "
        "runners finished in that run (> 1: pynenc-django's runner is faster).",
        "",
        *summary_rows(results, args),
        "",
        "## Every measurement",
        "",
        "Task processes: the most processes the runner had beyond those it had idle, and the "
        "most of them paused at once (sampled every 0.2 s). Statuses: the invocations' "
        "statuses when the measurement ended.",
        "",
        *detail_rows(results),
        "",
    ]
    if warned := warning_lines(results):
        lines += [
            "Runner warnings (pynenc logs at warning: a healthy runner logs none), the most "
            "frequent per measurement, times and ids folded to `<id>`:",
            "",
            *warned,
            "",
        ]
    if errors := [f"- {r['database']}: {r['error']}" for r in results if r["error"]]:
        lines += ["Errors:", "", *errors, ""]
    lines += [
        "## Reproduce",
        "",
        "```console",
        shlex.join([".venv/bin/python", "bench/fan_in.py", *argv]),
        "```",
        "",
        "It needs the PostgreSQL (127.0.0.1:5432, user `postgres`) and MariaDB "
        "(127.0.0.1:3306, user `root`) servers for those databases, and drops and recreates "
        f"its own database, `{DB_NAME}`, on each.",
    ]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------- main


def comma_list(value: str, known: tuple[str, ...] | dict[str, str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or set(items) - set(known):
        raise argparse.ArgumentTypeError(
            f"{what}: comma-separated, from {', '.join(known)} (got {value!r})"
        )
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--databases",
        type=lambda v: comma_list(v, DATABASES, "--databases"),
        default=list(DATABASES),
    )
    parser.add_argument(
        "--runners",
        type=lambda v: comma_list(v, RUNNERS, "--runners"),
        default=list(RUNNERS),
        help="ours (DjangoPersistentProcessRunner), process (pynenc's ProcessRunner)",
    )
    parser.add_argument(
        "--variants",
        type=lambda v: comma_list(v, VARIANTS, "--variants"),
        default=list(VARIANTS),
        help="how a parent waits: group (group.results), sequential (each .result)",
    )
    parser.add_argument("--parents", type=int, default=200)
    parser.add_argument("--children", type=int, default=10, help="per parent")
    parser.add_argument("--workers", type=int, default=2, help="W, for both runners")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120, help="seconds per measurement")
    parser.add_argument("--settle-seconds", type=float, default=2.0)
    parser.add_argument("--conn-max-age", type=int, default=60, help="CONN_MAX_AGE (as make bench)")
    parser.add_argument("--postgres-url", dest="postgresql_url", default=SERVER_URLS["postgresql"])
    parser.add_argument("--mariadb-url", dest="mariadb_url", default=SERVER_URLS["mariadb"])
    parser.add_argument("--output", type=Path, help="markdown file (default: bench/results/)")
    parser.add_argument("--_measure", dest="measure", choices=DATABASES, help=argparse.SUPPRESS)
    parser.add_argument("--_out", dest="out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.parents, args.children, args.workers, args.runs) < 1 or args.timeout <= 0:
        parser.error("--parents, --children, --workers, --runs and --timeout must be positive")
    return args


def database_timeout(args: argparse.Namespace) -> float:
    """A database's subprocess may take this long: every measurement to its timeout, plus
    the probe, the kill and the database's recreation."""
    measurements = args.runs * len(args.variants) * len(args.runners)
    return 300 + measurements * (args.timeout + PROBE_TIMEOUT + 120)


def measure_all(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """One subprocess per database, one after the other; what each wrote."""
    results = []
    with tempfile.TemporaryDirectory(prefix="pynenc-fan-in-") as tmp:
        for db in args.databases:
            out = Path(tmp) / f"{db}.json"
            cmd = [sys.executable, __file__, *argv, "--_measure", db, "--_out", str(out)]
            # Own session: Ctrl-C stops this process, which then stops the whole tree.
            proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
            problem = None
            try:
                code = proc.wait(database_timeout(args))
                if code != 0:
                    problem = f"its subprocess exited with {code}"
            except subprocess.TimeoutExpired:
                problem = f"its subprocess overran {database_timeout(args):.0f} s"
                kill_tree(proc)
            except KeyboardInterrupt:
                kill_tree(proc)
                raise
            try:
                payload = json.loads(out.read_text())
            except (OSError, ValueError):
                payload = {"database": db, "server": None, "measurements": []}
            payload["error"] = payload.get("error") or problem
            results.append(payload)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.measure:
        return measure_database(args.measure, args, args.out)
    if process_runner_slots(args.workers) != args.workers and "process" in args.runners:
        log(f"ProcessRunner will run {process_runner_slots(args.workers)} slots, not W")
    try:
        with terminate_as_interrupt():  # SIGTERM too: the database's subprocess is stopped
            results = measure_all(args, argv)
    except KeyboardInterrupt:
        log("interrupted: no report written")
        return 130
    date = dt.date.today().isoformat()
    output = args.output or RESULTS_DIR / f"fan-in-{date}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(results, args, argv, date))
    raw = RESULTS_DIR / "raw" / f"fan-in-{date}-{time.strftime('%H%M%S')}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    raw.write_text(
        json.dumps({"argv": argv, "args": settings, "versions": versions(), "results": results})
    )
    print(output.read_text())
    log(f"results written to {output} (raw: {raw})")
    failed = [r["database"] for r in results if r["error"]]
    failed += [
        f"{r['database']} {m['variant']} {m['runner']} run {m['run']}"
        for r in results
        for m in r["measurements"]
        if m.get("error")
    ]
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
