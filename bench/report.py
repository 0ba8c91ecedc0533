"""Aggregate the raw JSON of a ``make bench`` run into ``bench/results/<date>.md`` and plots.

``render(raw_dir, out_md, png_dir)`` reads every ``<row>.run<k>.json`` the measurement
scripts wrote (``bench.throughput``, ``bench.peers.*``; one file may also hold several runs)
and the driver's ``_run.json`` (machine, servers and their settings, which step failed or was
skipped and why). Every figure is the median over the runs, with the minimum and maximum;
budgets compare medians. Anything missing (a step that failed, a figure a system does not
have) is shown as such rather than guessed, and a budget without its data counts as not met.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.runner_idle_wake import percentile  # noqa: E402  (linear interpolation)

MANIFEST = "_run.json"
HEADLINE_WORKERS = 2
# Report order: pynenc-django per database (defaults, then tuned), the reference, the peers.
SYSTEM_ORDER = (
    "pynenc-django-postgresql",
    "pynenc-django-postgresql-tuned",
    "pynenc-django-mariadb",
    "pynenc-django-mariadb-tuned",
    "pynenc-django-sqlite",
    "pynenc-django-sqlite-tuned",
    "pynenc-sqlite",
    "celery-redis",
    "procrastinate",
    "django-tasks-db",
    "django-tasks-db-tuned",
    "pynenc-django-postgresql-seeded",
    "pynenc-django-postgresql-nowait",
)
DJANGO_SYSTEMS = ("pynenc-django-postgresql", "pynenc-django-mariadb", "pynenc-django-sqlite")
HEADLINE = "pynenc-django-postgresql"
SEEDED = "pynenc-django-postgresql-seeded"
NOWAIT = "pynenc-django-postgresql-nowait"
CELERY = "celery-redis"
PROCRASTINATE = "procrastinate"
REFERENCE = "pynenc-sqlite"
MAX_STATEMENTS_PER_LIFECYCLE = 15.0
MAX_IDLE_STATEMENTS_PER_S = 5.0
MIN_SEEDED_RATIO = 0.9
MODES = ("single", "batch")
PLOTS = ("throughput_w2.png", "throughput_workers.png", "latency.png", "throughput_seeded.png")
COLOURS = {"single": "#1f77b4", "batch": "#ff9f40"}
SYSTEM_COLOURS = {
    "pynenc-django-postgresql": "#08519c",
    "pynenc-django-postgresql-tuned": "#08519c",
    "pynenc-django-postgresql-nowait": "#08519c",
    "pynenc-django-mariadb": "#3182bd",
    "pynenc-django-mariadb-tuned": "#3182bd",
    "pynenc-django-sqlite": "#6baed6",
    "pynenc-django-sqlite-tuned": "#6baed6",
    "pynenc-sqlite": "#ff9f40",
    "procrastinate": "#7b4ea3",
    "django-tasks-db": "#2ca02c",
    "django-tasks-db-tuned": "#2ca02c",
    "celery-redis": "#8c564b",
}


def is_tuned(system: str) -> bool:
    return system.endswith("-tuned")


# ---------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Stat:
    """Median, minimum and maximum over the runs that measured a figure."""

    median: float
    low: float
    high: float
    n: int


def stat(values: Iterable[Any]) -> Stat | None:
    """None when no run measured it (missing key, null, or not a number)."""
    numbers = [v for v in (as_float(x) for x in values) if v is not None]
    if not numbers:
        return None
    return Stat(statistics.median(numbers), min(numbers), max(numbers), len(numbers))


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def by_workers(mapping: Any) -> dict[int, float]:
    """``{"2": 150.2}`` as ``{2: 150.2}``, dropping what is not a worker count and a rate: a
    throughput of 0 is a failed measurement, and every ratio divides by throughputs."""
    out: dict[int, float] = {}
    if not isinstance(mapping, dict):
        return out
    for key, value in mapping.items():
        number = as_float(value)
        try:
            workers = int(key)
        except (TypeError, ValueError):
            continue
        if number is not None and number > 0:
            out[workers] = number
    return out


@dataclass
class Summary:
    """One row's runs, aggregated."""

    system: str
    label: str
    kind: str
    database: str
    versions: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str]
    runs: int
    fake: bool
    # per mode ("single", "batch"): {W: Stat}; and per run index: {W: value}
    throughput: dict[str, dict[int, Stat]] = field(default_factory=dict)
    per_run: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)
    submit_single: Stat | None = None
    submit_batch: Stat | None = None
    p50: Stat | None = None
    p99: Stat | None = None
    latency_samples: list[float] = field(default_factory=list)
    statements: Stat | None = None
    driver_sent: Stat | None = None
    client_submit: Stat | None = None
    workers_part: Stat | None = None
    client_read: Stat | None = None
    connections: Stat | None = None
    idle: Stat | None = None
    idle_total: Stat | None = None
    idle_connections: Stat | None = None
    breakdown: list[tuple[str, float]] = field(default_factory=list)
    idle_breakdown: list[tuple[str, float]] = field(default_factory=list)
    breakdown_runs: int = 0
    seed_rows: int | None = None
    # where a round trip's time goes (pynenc-django): segment -> Stat of the runs' medians
    trip: dict[str, Stat] = field(default_factory=dict)

    def tp(self, mode: str, workers: int = HEADLINE_WORKERS) -> Stat | None:
        return self.throughput.get(mode, {}).get(workers)


def median_breakdown(items: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Median per statement over the runs that report one (absent = 0 in that run)."""
    if not items:
        return []
    keys = {k for b in items for k in b}
    medians = {k: statistics.median(as_float(b.get(k)) or 0.0 for b in items) for k in keys}
    return sorted(medians.items(), key=lambda kv: (-kv[1], kv[0]))


def summarise(payloads: list[dict[str, Any]], name: str) -> Summary:
    """One row from its files (one per run, or one holding several runs)."""
    first = payloads[0]
    runs = sorted(
        (r for p in payloads for r in p.get("runs") or [] if isinstance(r, dict)),
        key=lambda r: as_float(r.get("run")) or 0,
    )
    system = str(first.get("system") or name)
    summary = Summary(
        system=system,
        label=str(first.get("label") or system),
        kind=str(first.get("kind") or "peer"),
        database=str(first.get("database") or "–"),
        versions=first.get("versions") if isinstance(first.get("versions"), dict) else {},
        settings=first.get("settings") if isinstance(first.get("settings"), dict) else {},
        notes=[str(n) for p in payloads for n in p.get("notes") or []],
        runs=len(runs),
        fake=any(bool(p.get("fixture")) for p in payloads),
    )
    for mode in MODES:
        per_run = {
            int(as_float(r.get("run")) or i): by_workers(r.get(f"throughput_{mode}"))
            for i, r in enumerate(runs, 1)
        }
        summary.per_run[mode] = per_run
        counts = sorted({w for values in per_run.values() for w in values})
        summary.throughput[mode] = {
            w: s for w in counts if (s := stat(v.get(w) for v in per_run.values()))
        }
    summary.submit_single = stat(r.get("submit_single_per_s") for r in runs)
    summary.submit_batch = stat(r.get("submit_batch_per_s") for r in runs)
    latencies = [samples(r.get("latency_ms")) for r in runs]
    summary.p50 = stat(percentile(s, 50) for s in latencies if s)
    summary.p99 = stat(percentile(s, 99) for s in latencies if s)
    summary.latency_samples = [x for s in latencies for x in s]
    summary.statements = stat(r.get("statements_per_lifecycle") for r in runs)
    summary.driver_sent = stat(r.get("driver_sent_per_lifecycle") for r in runs)
    summary.client_submit = stat(r.get("client_submit_per_lifecycle") for r in runs)
    summary.workers_part = stat(r.get("workers_per_lifecycle") for r in runs)
    summary.client_read = stat(r.get("client_read_per_lifecycle") for r in runs)
    summary.connections = stat(r.get("connections_per_lifecycle") for r in runs)
    summary.idle = stat(r.get("idle_statements_per_s") for r in runs)
    summary.idle_total = stat(r.get("idle_total_statements_per_s") for r in runs)
    summary.idle_connections = stat(r.get("idle_connections_per_s") for r in runs)
    breakdowns = [b for r in runs if isinstance(b := r.get("statement_breakdown"), dict)]
    summary.breakdown = median_breakdown(breakdowns)
    summary.breakdown_runs = len(breakdowns)
    summary.idle_breakdown = median_breakdown(
        [b for r in runs if isinstance(b := r.get("idle_breakdown"), dict)]
    )
    trips = [t for r in runs if isinstance(t := r.get("round_trip_breakdown_ms"), dict)]
    for segment in dict.fromkeys(k for t in trips for k in t):
        if (st := stat(t.get(segment) for t in trips)) is not None:
            summary.trip[segment] = st
    seeds = [as_float(r.get("seed_rows")) for r in runs]
    summary.seed_rows = int(max(s for s in seeds if s)) if any(seeds) else None
    return summary


def samples(value: Any) -> list[float]:
    if not isinstance(value, list):
        return []
    return [v for v in (as_float(x) for x in value) if v is not None]


def system_key(system: str) -> tuple[int, str]:
    return (SYSTEM_ORDER.index(system) if system in SYSTEM_ORDER else len(SYSTEM_ORDER), system)


@dataclass
class Loaded:
    """What a raw directory holds: summaries, the driver's manifest, unreadable files."""

    summaries: dict[str, Summary]
    manifest: dict[str, Any]
    unreadable: dict[str, str]

    @property
    def fake(self) -> bool:
        return bool(self.manifest.get("fixture")) or any(s.fake for s in self.summaries.values())

    def status(self, system: str) -> dict[str, Any]:
        systems = self.manifest.get("systems")
        entry = systems.get(system) if isinstance(systems, dict) else None
        return entry if isinstance(entry, dict) else {}

    def rows(self, keep: Callable[[Summary], bool] = lambda s: True) -> list[Summary]:
        return [s for s in self.summaries.values() if keep(s)]


def load(raw_dir: Path) -> Loaded:
    """Every ``*.json`` in ``raw_dir`` (not its subdirectories, which hold earlier runs)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    unreadable: dict[str, str] = {}
    manifest: dict[str, Any] = {}
    for path in sorted(raw_dir.glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            unreadable[path.name] = f"{type(exc).__name__}: {exc}"
            continue
        if path.name == MANIFEST:
            manifest = payload if isinstance(payload, dict) else {}
        elif isinstance(payload, dict) and "runs" in payload:
            name = str(payload.get("system") or path.name.split(".")[0])
            grouped.setdefault(name, []).append(payload)
        else:
            unreadable[path.name] = "not a measurement (no `runs`)"
    summaries = {name: summarise(p, name) for name, p in grouped.items()}
    ordered = dict(sorted(summaries.items(), key=lambda kv: system_key(kv[0])))
    return Loaded(ordered, manifest, unreadable)


def run_date(raw_dir: Path) -> str | None:
    """The date a raw directory was measured on, from its manifest (None if unknown)."""
    try:
        manifest = json.loads((raw_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    date = manifest.get("date") if isinstance(manifest, dict) else None
    return str(date) if date else None


def is_fake(raw_dir: Path) -> bool:
    """True if the directory holds fixture data, which must never become a real result."""
    return load(raw_dir).fake


# ---------------------------------------------------------------------------- formatting


def num(value: float | None) -> str:
    if value is None:
        return "–"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(s: Stat | None) -> str:
    """'median (min–max)'; one run: just the value."""
    if s is None:
        return "–"
    if s.n == 1:
        return num(s.median)
    return f"{num(s.median)} ({num(s.low)}–{num(s.high)})"


def duration(seconds: Any) -> str:
    value = as_float(seconds)
    if value is None:
        return "–"
    minutes, secs = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def sql_cell(sql: str, limit: int = 120) -> str:
    short = " ".join(sql.split())
    short = short if len(short) <= limit else short[: limit - 1] + "…"
    return "`" + short.replace("`", "'").replace("|", "\\|") + "`"


def row_name(s: Summary) -> str:
    name = md_escape(s.label)
    headline = s.kind == "pynenc-django" and s.system in DJANGO_SYSTEMS  # each database's own
    return f"**{name}**" if headline else name


# ---------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    """One budget of the benchmark; ``met`` is False when the data is missing."""

    name: str
    target: str
    measured: str
    met: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.met else "**FAIL**"


def absent(loaded: Loaded, system: str) -> str:
    """Why a row has no data: failed, skipped (and why), or not part of the run."""
    status = loaded.status(system)
    if status.get("status"):
        reason = str(status.get("reason") or "").strip()
        return f"{system} {status['status']}" + (f": {reason}" if reason else "")
    return f"{system} not in this run"


def missing(loaded: Loaded, system: str, what: str) -> str:
    """Why a figure is absent: the row has no data, or its data lacks the figure."""
    if system in loaded.summaries:
        return f"n/a ({system}: no {what} in its data)"
    return f"n/a ({absent(loaded, system)})"


def compare(
    loaded: Loaded,
    name: str,
    mine: tuple[str, Callable[[Summary], Stat | None], str],
    theirs: tuple[str, Callable[[Summary], Stat | None], str],
    higher_is_better: bool,
    unit: str,
) -> Budget:
    """``mine`` vs ``theirs``, each (row, figure, what): a budget on their medians."""
    target = "≥ 1×" if higher_is_better else "≤ 1×"
    values = []
    for system, figure, what in (mine, theirs):
        summary = loaded.summaries.get(system)
        value = figure(summary) if summary else None
        if value is None:
            return Budget(name, target, missing(loaded, system, what), False)
        values.append(value.median)
    a, b = values
    met = a >= b if higher_is_better else a <= b
    ratio = f": {a / b:.2f}×" if b else ""
    return Budget(name, target, f"{num(a)} vs {num(b)} {unit}{ratio}", met)


def budgets(loaded: Loaded) -> list[Budget]:
    """Issue 19's budgets: PostgreSQL, W=2, every row at its defaults (the headline)."""
    out: list[Budget] = []
    w = f"W={HEADLINE_WORKERS}"
    for mode in MODES:
        out.append(
            compare(
                loaded,
                f"{HEADLINE} end to end, {mode} submit ({w}) ≥ {CELERY} {mode}",
                (HEADLINE, lambda s, m=mode: s.tp(m), f"{mode} throughput at {w}"),
                (CELERY, lambda s, m=mode: s.tp(m), f"{mode} throughput at {w}"),
                True,
                "tasks/s",
            )
        )
    out.append(
        compare(
            loaded,
            f"{HEADLINE} round trip p50 ≤ {CELERY}",
            (HEADLINE, lambda s: s.p50, "latency samples"),
            (CELERY, lambda s: s.p50, "latency samples"),
            False,
            "ms",
        )
    )
    out.append(
        compare(
            loaded,
            f"{HEADLINE} batch submit rate ≥ {PROCRASTINATE} batch submit rate",
            (HEADLINE, lambda s: s.submit_batch, "batch submit rate"),
            (PROCRASTINATE, lambda s: s.submit_batch, "batch submit rate"),
            True,
            "submits/s",
        )
    )
    sqlite = "pynenc-django-sqlite"
    out.append(
        compare(
            loaded,
            f"{sqlite} batch submit rate ≥ its single submit rate",
            (sqlite, lambda s: s.submit_batch, "batch submit rate"),
            (sqlite, lambda s: s.submit_single, "single submit rate"),
            True,
            "submits/s",
        )
    )
    for system in DJANGO_SYSTEMS:
        summary = loaded.summaries.get(system)
        # Issue 6's unit: what Django's execute_wrapper sees, i.e. without what the driver
        # sends on its own (COMMIT, SET autocommit, ...), reported beside it.
        name = f"{system} statements per lifecycle through Django's cursors"
        target = f"≤ {MAX_STATEMENTS_PER_LIFECYCLE:g}"
        if summary and summary.statements and summary.driver_sent:
            total = summary.statements.median
            value = total - summary.driver_sent.median
            measured = f"{num(value)} ({num(total)} with what the driver sends itself)"
            out.append(Budget(name, target, measured, value <= MAX_STATEMENTS_PER_LIFECYCLE))
        else:
            out.append(Budget(name, target, missing(loaded, system, "statement counts"), False))
    for system in DJANGO_SYSTEMS:
        summary = loaded.summaries.get(system)
        name = f"{system} idle statements/s, busiest process"
        target = f"≤ {MAX_IDLE_STATEMENTS_PER_S:g}"
        if summary and summary.idle:
            value = summary.idle.median
            out.append(Budget(name, target, num(value), value <= MAX_IDLE_STATEMENTS_PER_S))
        else:
            out.append(Budget(name, target, missing(loaded, system, "idle counts"), False))
    seeded = loaded.summaries.get(SEEDED)
    rows = seed_label(loaded)
    for mode in MODES:
        name = (
            f"{HEADLINE} end to end ({mode}, {w}) with {rows} finished invocations "
            f"≥ {MIN_SEEDED_RATIO:.0%} of empty"
        )
        target = f"≥ {MIN_SEEDED_RATIO:.0%}"
        empty = loaded.summaries.get(HEADLINE)
        full = seeded.tp(mode) if seeded else None
        base = empty.tp(mode) if empty else None
        if full and base:
            ratio = full.median / base.median
            measured = f"{num(full.median)} vs {num(base.median)} tasks/s: {ratio:.0%}"
            out.append(Budget(name, target, measured, ratio >= MIN_SEEDED_RATIO))
        elif (loaded.manifest.get("args") or {}).get("no_seeded"):
            out.append(Budget(name, target, "n/a (not measured: --no-seeded)", False))
        else:
            which = HEADLINE if seeded and full else SEEDED
            out.append(Budget(name, target, missing(loaded, which, f"{mode} throughput"), False))
    return out


def seed_label(loaded: Loaded) -> str:
    seeded = loaded.summaries.get(SEEDED)
    rows = (seeded.seed_rows if seeded else None) or as_float(loaded.manifest.get("seed_rows"))
    return f"{int(rows):,}" if rows else "the seeded"


# ---------------------------------------------------------------------------- markdown


@dataclass
class Rendered:
    """What ``render`` wrote, and what the driver's exit status depends on."""

    markdown: Path
    plots: list[Path]
    budgets: list[Budget]
    problems: list[str]  # rows that failed or were skipped, unreadable files

    @property
    def failed_budgets(self) -> list[Budget]:
        return [b for b in self.budgets if not b.met]


def render(raw_dir: Path, out_md: Path, png_dir: Path) -> Rendered:
    """Write the markdown report and its plots for the run in ``raw_dir``."""
    raw_dir, out_md, png_dir = Path(raw_dir), Path(out_md), Path(png_dir)
    loaded = load(raw_dir)
    png_dir.mkdir(parents=True, exist_ok=True)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a plot this run cannot draw must not survive from an earlier one
        (png_dir / name).unlink(missing_ok=True)
    plots = draw_plots(loaded, png_dir)
    checks = budgets(loaded)
    problems = [
        absent(loaded, system)
        for system, entry in (loaded.manifest.get("systems") or {}).items()
        if isinstance(entry, dict) and entry.get("status") != "ok"
    ]
    problems += [f"{name}: unreadable ({why})" for name, why in loaded.unreadable.items()]
    links = {p.name: Path(os.path.relpath(p, out_md.parent)).as_posix() for p in plots}
    out_md.write_text(markdown(loaded, raw_dir, out_md, links, checks))
    return Rendered(out_md, plots, checks, problems)


def markdown(
    loaded: Loaded, raw_dir: Path, out_md: Path, links: dict[str, str], checks: list[Budget]
) -> str:
    manifest = loaded.manifest
    date = manifest.get("date") or out_md.stem
    lines = [f"# pynenc-django benchmark, {date}", ""]
    if loaded.fake:
        lines += [
            "> **FAKE FIXTURE DATA.** Rendered from `bench/tests_fixture/` to develop the report; "
            "not a measurement.",
            "",
        ]
    try:
        raw_shown = raw_dir.resolve().relative_to(REPO).as_posix()
    except ValueError:
        raw_shown = str(raw_dir)
    ignored = " (git-ignored)" if raw_shown.startswith("bench/results/raw/") else ""
    met = sum(b.met for b in checks)
    runs = manifest.get("runs") or max((s.runs for s in loaded.summaries.values()), default=0)
    lines += [
        "pynenc-django on PostgreSQL, MariaDB and SQLite against pynenc 0.4's own SQLite backend "
        "(the reference), Celery with Redis, procrastinate and django-tasks-db, all measured in "
        f"one session on one machine, {runs} interleaved run(s) (run 1 of every system, then "
        "run 2 of every system...). Every system runs the same synchronous `noop(i)` through "
        "the same procedure (`bench/harness.py`); every figure is the **median over the runs "
        f"(min–max)**. Budgets: **{met} of {len(checks)} met**.",
        "",
        "## How to reproduce",
        "",
        "```console",
        "make bench                                   # every system, 3 runs each",
        "make bench BENCH_ARGS='--quick --runs 1'     # a quick look",
        ".venv/bin/python -m bench.bench --help       # --systems, --seed-rows, --report-only, ...",
        "```",
        "",
        f"Raw JSON of this run: `{raw_shown}/`{ignored}; "
        f"`.venv/bin/python -m bench.bench --report-only {raw_shown}` renders this file again.",
        "",
    ]
    if command := manifest.get("command"):
        lines += [f"This run: `{command}`", ""]
    lines += method_section(loaded)
    lines += machine_section(loaded)
    lines += run_section(loaded)
    lines += summary_section(loaded, links)
    lines += budget_section(checks)
    lines += statements_section(loaded)
    lines += workers_section(loaded, links)
    lines += seeded_section(loaded, links)
    lines += latency_section(loaded, links)
    lines += details_section(loaded)
    return "\n".join(lines).rstrip() + "\n"


def method_section(loaded: Loaded) -> list[str]:
    sizes = next(iter(loaded.summaries.values())).settings if loaded.summaries else {}
    n = sizes.get("tasks", "N")
    return [
        "## What is measured",
        "",
        f"Per system and run, N = {fmt_setting(n)} calls of a trivial synchronous task "
        "(`noop(i)` returns `i`), logging at WARNING, fresh store, emptied between phases "
        "the same way for every system (`TRUNCATE` through the client's connection; Celery: "
        "its Redis keys deleted):",
        "",
        "- **End to end** (tasks/s), W worker processes up and idle: N single calls "
        "(pynenc `noop(i)`, Celery `.delay`, procrastinate `.defer`, django-tasks `.enqueue`) "
        "and the client reading every result, then, on the same workers, one batch of N "
        "(pynenc `parallelize`, Celery `group(...).apply_async()`, procrastinate "
        "`batch_defer`; django-tasks-db has none) and every result read. The clock stops "
        "when the client has read the last result: pynenc `.result` of each / "
        "`group.results`; Celery `AsyncResult.get()` of each / `GroupResult.get()`; "
        "procrastinate and django-tasks-db, which have no blocking wait, one query every "
        "10 ms reading the status (and result) rows of every job still pending.",
        "- **Submit rate**, no worker running: the N single calls, then one batch of N.",
        "- **Round trip**, W=2 idle: one call at a time after a 0.05–0.2 s gap, submit to "
        "result read by the client (pynenc `.result`, Celery `.get()`; procrastinate and "
        "django-tasks-db poll the one job every 1 ms).",
        "- **Statements**, untimed (no process counts anything in the phases above): every "
        "statement the client and every worker-side process send to the server "
        "(`bench/wirecount.py`), transaction control included; per lifecycle over single "
        "calls (submits, the workers, one read of each result; how a client waits is left "
        "out), and idle per second over a window with nothing submitted.",
        "",
        "Django-based systems run with Django's defaults (`CONN_MAX_AGE` 0, what a project "
        "gets; **the headline**) and `-tuned` (`CONN_MAX_AGE` 60, `CONN_HEALTH_CHECKS` on); "
        "Celery with its defaults (prefork, Redis broker and result backend); procrastinate "
        "with its defaults (listen/notify). See `bench/README.md`.",
        "",
    ]


def machine_section(loaded: Loaded) -> list[str]:
    manifest = loaded.manifest
    machine = manifest.get("machine") or {}
    lines = ["## Machine and servers", ""]
    if not machine:
        return [*lines, "Not recorded (no `_run.json` in the raw directory).", ""]
    rows = [
        ("CPU", f"{machine.get('cpu', '–')}, {machine.get('cores', '–')} cores"),
        ("RAM", machine.get("ram", "–")),
        ("OS, kernel", f"{machine.get('distro', '–')}, {machine.get('os', '–')}"),
        ("Python", machine.get("python", "–")),
    ]
    servers = manifest.get("servers") or {}
    for key, name in (
        ("sqlite", "SQLite"),
        ("postgresql", "PostgreSQL server"),
        ("mariadb", "MariaDB server"),
        ("redis", "Redis server"),
    ):
        info = servers.get(key)
        if isinstance(info, dict):
            value = info.get("version") or "–"
            if info.get("address"):
                value += f" at {info['address']}"
            if isinstance(settings := info.get("settings"), dict) and settings:
                value += ": " + ", ".join(f"{k} = {v}" for k, v in settings.items())
            if info.get("reachable") is False:
                value = f"**unreachable** at {info.get('address', '?')}"
            rows.append((name, value))
    packages = machine.get("packages") or {}
    if packages:
        rows.append(("Packages", ", ".join(f"{k} {v}" for k, v in packages.items())))
    rows += [
        ("Started", manifest.get("started", "–")),
        ("Total wall time", duration(manifest.get("wall_seconds"))),
    ]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {md_escape(str(v))} |" for k, v in rows]
    lines += [
        "",
        "The client, the workers and the servers share the machine's cores; other test suites "
        "may share it and the servers too: expect noise between runs, and compare figures of "
        "the same run. Every database is created fresh for a measurement and nothing vacuums "
        "it meanwhile (the servers' settings above apply to every system alike).",
        "",
    ]
    return lines


def run_section(loaded: Loaded) -> list[str]:
    systems = loaded.manifest.get("systems") or {}
    if not systems and not loaded.unreadable:
        return []
    lines = ["## Rows run", ""]
    if systems:
        lines += ["| row | status | runs | wall time (all runs) |", "|---|---|---|---|"]
        for system, entry in sorted(systems.items(), key=lambda kv: system_key(kv[0])):
            entry = entry if isinstance(entry, dict) else {}
            status = str(entry.get("status", "?"))
            shown = status if status == "ok" else f"**{status}**"
            if entry.get("reason"):
                shown += f": {md_escape(str(entry['reason']))}"
            steps = entry.get("runs") if isinstance(entry.get("runs"), dict) else {}
            ok = sum(1 for s in steps.values() if isinstance(s, dict) and s.get("status") == "ok")
            seconds = sum(as_float(s.get("seconds")) or 0 for s in steps.values())
            lines.append(f"| {system} | {shown} | {ok} of {len(steps)} ok | {duration(seconds)} |")
        lines.append("")
    for system, entry in sorted(systems.items(), key=lambda kv: system_key(kv[0])):
        if isinstance(entry, dict) and entry.get("error"):
            lines += [
                f"{system}, last lines of its output:",
                "",
                "```text",
                str(entry["error"]).rstrip(),
                "```",
                "",
            ]
    for name, why in loaded.unreadable.items():
        lines += [f"- `{name}` could not be read: {md_escape(why)}"]
    if loaded.unreadable:
        lines.append("")
    return lines


def summary_table(rows: list[Summary]) -> list[str]:
    w = HEADLINE_WORKERS
    lines = [
        f"| system | end to end, single (W={w}, tasks/s) | end to end, batch (W={w}, tasks/s) "
        "| submit single (/s) | submit batch (/s) | round trip p50 (ms) | p99 (ms) "
        "| statements / lifecycle | connections / lifecycle | idle statements/s (busiest process) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in rows:
        lines.append(
            f"| {row_name(s)} | {cell(s.tp('single'))} | {cell(s.tp('batch'))} "
            f"| {cell(s.submit_single)} | {cell(s.submit_batch)} | {cell(s.p50)} | {cell(s.p99)} "
            f"| {cell(s.statements)} | {cell(s.connections)} | {cell(s.idle)} |"
        )
    return [*lines, ""]


def summary_section(loaded: Loaded, links: dict[str, str]) -> list[str]:
    headline = loaded.rows(lambda s: not is_tuned(s.system) and s.system not in (SEEDED, NOWAIT))
    tuned = loaded.rows(lambda s: is_tuned(s.system))
    nowait = loaded.rows(lambda s: s.system == NOWAIT)
    lines = ["## Summary: every system with its defaults (the headline)", ""]
    lines += summary_table(headline) if headline else ["No data.", ""]
    lines += [
        "– : the system has no such thing (django-tasks-db has no batch submit) or it was "
        "not measured (see Rows run). Statements per lifecycle and idle statements/s: every "
        "statement sent to the server, transaction control included, by the client and every "
        "worker-side process (section Statements).",
        "",
    ]
    if tuned:
        lines += [
            "## Django-based systems tuned: `CONN_MAX_AGE` 60, `CONN_HEALTH_CHECKS` on",
            "",
            *summary_table(tuned),
        ]
    if nowait:
        lines += [
            "## Diagnostic: PostgreSQL commits without waiting for the WAL flush",
            "",
            "Not a configuration to run: `synchronous_commit` off in the client and the runner "
            "(`PGOPTIONS`), so a commit returns before its WAL reaches the disk and a server "
            "crash can lose the last moments' submits and results. It shows how much of the "
            "rows above is durability (each submit and each final status waits for one "
            "flush): Redis here runs without `appendonly` (nothing it holds survives a "
            "crash), so Celery's figures include no flush at all.",
            "",
            *summary_table(nowait),
        ]
    systems = loaded.manifest.get("systems") or {}
    gone = sorted((x for x in systems if x not in loaded.summaries), key=system_key)
    if gone:
        lines += ["Not in the tables: " + "; ".join(absent(loaded, x) for x in gone) + ".", ""]
    if "throughput_w2.png" in links:
        lines += [f"![End to end at W={HEADLINE_WORKERS}]({links['throughput_w2.png']})", ""]
    return lines


def budget_section(checks: list[Budget]) -> list[str]:
    lines = [
        "## Budgets",
        "",
        "Issue 19's, on the headline rows (each system's defaults), W=2, medians of this run. "
        "A budget whose data is missing counts as not met.",
        "",
        "| # | budget | target | measured | verdict |",
        "|---:|---|---|---|---|",
    ]
    lines += [
        f"| {i} | {md_escape(b.name)} | {b.target} | {md_escape(b.measured)} | {b.verdict} |"
        for i, b in enumerate(checks, 1)
    ]
    explained = [
        f"{i} ({EXPLAINED[key]})"
        for i, b in enumerate(checks, 1)
        for key in EXPLAINED
        if not b.met and key in b.name
    ]
    if explained:
        lines += [
            "",
            "Why these are not met, measured, and what it would take: `bench/README.md`, "
            f"budget {', '.join(explained)}.",
        ]
    return [*lines, ""]


#: Budgets whose failure ``bench/README.md`` explains, by a part of their name: its section.
EXPLAINED = {
    "end to end, single submit": '"Why end to end with single submits is at parity with '
    "Celery's, not ahead\"",
    "round trip p50": "\"Why pynenc-django's round trip is still over Celery's\"",
}


def statements_section(loaded: Loaded) -> list[str]:
    rows = loaded.rows(lambda s: s.statements is not None or s.idle is not None)
    if not rows:
        return []
    lines = [
        "## Statements",
        "",
        "Counted in a separate, untimed phase with W=2 (`bench/wirecount.py`, at the driver: "
        "psycopg, mysqlclient, sqlite3, redis-py): every statement the client and every "
        "worker-side process (pynenc's runner parent included, Celery's main process and pool "
        "children) send to the server, `BEGIN`/`COMMIT`/`SAVEPOINT`, `SET autocommit`, "
        "`PRAGMA`s, health checks (`SELECT 1`, psycopg_pool's empty query, MySQL's ping) and "
        "the one-time `PREPARE` of a server-side prepared statement included; a Redis "
        "command counts as one. New connections are counted apart (the driver's connect "
        "call: handshake, authentication). Per lifecycle: the client's submits, everything "
        "the workers sent meanwhile, and one read of each result (procrastinate: its "
        "status), divided by the calls; the client's wait for them to finish is not counted "
        "(it depends on how long they took, and how a system waits is measured by the round "
        "trip). Idle: over a window with nothing submitted.",
        "",
        "| system | per lifecycle | client submit | workers | client read | connections "
        "| idle: busiest process (/s) | idle: all worker processes (/s) | idle connections/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in rows:
        lines.append(
            f"| {row_name(s)} | {cell(s.statements)} | {cell(s.client_submit)} "
            f"| {cell(s.workers_part)} | {cell(s.client_read)} | {cell(s.connections)} "
            f"| {cell(s.idle)} | {cell(s.idle_total)} | {cell(s.idle_connections)} |"
        )
    return [*lines, ""]


def workers_section(loaded: Loaded, links: dict[str, str]) -> list[str]:
    rows = loaded.rows(lambda s: any(len(s.throughput.get(m, {})) > 1 for m in MODES))
    if not rows:
        return []
    counts = sorted({w for s in rows for m in MODES for w in s.throughput.get(m, {})})
    lines = [
        "## End to end by worker count",
        "",
        "Tasks per second, median (min–max) over the runs.",
        "",
        "| system | submit | " + " | ".join(f"W={w}" for w in counts) + " |",
        "|---|---|" + "---:|" * len(counts),
    ]
    for s in rows:
        for mode in MODES:
            if s.throughput.get(mode):
                lines.append(
                    f"| {md_escape(s.label)} | {mode} | "
                    + " | ".join(cell(s.tp(mode, w)) for w in counts)
                    + " |"
                )
    lines.append("")
    if "throughput_workers.png" in links:
        lines += [f"![End to end by worker count]({links['throughput_workers.png']})", ""]
    return lines


def seeded_section(loaded: Loaded, links: dict[str, str]) -> list[str]:
    rows = seed_label(loaded)
    lines = [f"## With {rows} finished invocations", ""]
    seeded = loaded.summaries.get(SEEDED)
    empty = loaded.summaries.get(HEADLINE)
    if not seeded:
        reason = absent(loaded, SEEDED)
        if (loaded.manifest.get("args") or {}).get("no_seeded"):
            reason = "not measured: --no-seeded"
        return [*lines, f"Not measured in this run ({reason}).", ""]
    lines += [
        f"The headline end-to-end measurement (pynenc-django on PostgreSQL, Django's defaults, "
        f"W={HEADLINE_WORKERS}) on a database seeded with {rows} finished invocations "
        "(`manage.py pynenc_seed`, made final, `VACUUM ANALYZE`), measured right after the "
        "empty one in every run. Per-run ratio: seeded / empty of the same run.",
        "",
        "| submit | empty (tasks/s) | seeded (tasks/s) | seeded / empty (medians) "
        "| per-run ratio (min–max) |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        full = seeded.tp(mode)
        base = empty.tp(mode) if empty else None
        ratio = f"{full.median / base.median:.0%}" if full and base else "–"
        per_run = []
        if empty:
            for run, values in seeded.per_run.get(mode, {}).items():
                e = empty.per_run.get(mode, {}).get(run, {}).get(HEADLINE_WORKERS)
                f = values.get(HEADLINE_WORKERS)
                if e and f:
                    per_run.append(f / e)
        spread = f"{min(per_run):.0%}–{max(per_run):.0%}" if per_run else "–"
        lines.append(f"| {mode} | {cell(base)} | {cell(full)} | {ratio} | {spread} |")
    lines.append("")
    if "throughput_seeded.png" in links:
        lines += [f"![Empty vs seeded]({links['throughput_seeded.png']})", ""]
    return lines


def trip_table(rows: list[Summary]) -> list[str]:
    """Where pynenc-django's round trip goes, segment by segment."""
    if not rows:
        return []
    segments = list(dict.fromkeys(k for s in rows for k in s.trip))
    lines = [
        "Where a pynenc-django round trip goes (ms; per run the median of each segment over "
        "its calls, then median (min–max) over runs). The points are the client's clock and "
        "the timestamps of the statuses REGISTERED, PENDING and SUCCESS in the history, each "
        "taken by its process just before the statement that records it: the client's "
        "Python before its submit; the submit statement with its commit (the WAL flush); the "
        "wake-up (the commit's `NOTIFY`, the runner's announcer, the worker's Python) until "
        "the claim; the claim statement, the task and the worker's Python until SUCCESS; the "
        "SUCCESS statement with its commit, the `NOTIFY`, the client's wake-up and its read "
        "of the result.",
        "",
        "| system | " + " | ".join(segments) + " |",
        "|---|" + "---:|" * len(segments),
    ]
    for s in rows:
        lines.append(
            f"| {row_name(s)} | " + " | ".join(cell(s.trip.get(k)) for k in segments) + " |"
        )
    return [*lines, ""]


def latency_section(loaded: Loaded, links: dict[str, str]) -> list[str]:
    measured = loaded.rows(lambda s: bool(s.latency_samples))
    if not measured:
        return []
    lines = [
        "## Round trip",
        "",
        "| system | calls (all runs) | p50 (ms) | p99 (ms) | min (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in measured:
        lines.append(
            f"| {row_name(s)} | {len(s.latency_samples)} | {cell(s.p50)} | {cell(s.p99)} "
            f"| {num(min(s.latency_samples))} | {num(max(s.latency_samples))} |"
        )
    lines += [
        "",
        "p50 and p99 per run (linear interpolation), then median (min–max) over runs; min and "
        "max over every call. procrastinate and django-tasks-db include up to 1 ms of the "
        "client's polling; django-tasks-db's idle workers poll once a second (its default "
        "`--interval`).",
        "",
    ]
    lines += trip_table(loaded.rows(lambda s: bool(s.trip)))
    if "latency.png" in links:
        lines += [f"![Round trip distribution]({links['latency.png']})", ""]
    return lines


def details_section(loaded: Loaded) -> list[str]:
    lines = ["## Per system", ""]
    for s in loaded.summaries.values():
        lines += [f"### {md_escape(s.label)}", ""]
        rows: list[tuple[str, str]] = [
            ("row", f"`{s.system}` ({s.kind})"),
            ("database", s.database),
            ("runs", str(s.runs)),
        ]
        if s.versions:
            rows.append(("versions", ", ".join(f"{k} {v}" for k, v in s.versions.items())))
        if s.settings:
            shown = ", ".join(
                f"{k}: {fmt_setting(v)}" for k, v in s.settings.items() if v is not None
            )
            rows.append(("settings", shown))
        lines += ["| | |", "|---|---|"]
        lines += [f"| {k} | {md_escape(v)} |" for k, v in rows]
        lines.append("")
        if s.notes:
            lines += ["Configuration and notes:", ""]
            lines += [f"- {' '.join(n.split())}" for n in s.notes]
            lines.append("")
        for title, items, unit in (
            ("Statements per lifecycle by statement", s.breakdown, "per lifecycle"),
            ("Idle statements per second by statement", s.idle_breakdown, "per second"),
        ):
            if not items:
                continue
            top, rest = items[:15], items[15:]
            lines += [
                f"{title} (median over the runs, top {len(top)}):",
                "",
                f"| {unit} | statement |",
                "|---:|---|",
            ]
            lines += [f"| {num(n)} | {sql_cell(sql)} |" for sql, n in top]
            if rest:
                lines.append(
                    f"| {num(sum(n for _, n in rest))} | *{len(rest)} other statement"
                    f"{'s' if len(rest) != 1 else ''}* |"
                )
            lines.append("")
    return lines


def fmt_setting(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# ---------------------------------------------------------------------------- plots


def draw_plots(loaded: Loaded, png_dir: Path) -> list[Path]:
    """The PNGs there is data for; a plot that fails is reported, not fatal."""
    import matplotlib

    matplotlib.use("Agg")
    out = []
    for draw in (plot_w2, plot_workers, plot_latency, plot_seeded):
        try:
            path = draw(loaded, png_dir)
        except Exception as exc:  # a report without one plot beats no report
            print(f"report: {draw.__name__} failed: {exc!r}", file=sys.stderr)
            path = None
        if path:
            out.append(path)
    return out


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def colour_of(summary: Summary, index: int) -> Any:
    import matplotlib.pyplot as plt

    return SYSTEM_COLOURS.get(summary.system) or plt.get_cmap("tab10")(index % 10)


def errors(stats: list[Stat]) -> list[list[float]]:
    return [[s.median - s.low for s in stats], [s.high - s.median for s in stats]]


def plot_w2(loaded: Loaded, png_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt

    rows = loaded.rows(lambda s: s.system != SEEDED and any(s.tp(m) for m in MODES))
    if not rows:
        return None
    rows.reverse()  # barh draws bottom-up: keep the report's order top-down
    fig, ax = plt.subplots(figsize=(9.5, 0.7 * len(rows) + 2.0))
    height = 0.38
    top = 0.0
    for k, mode in enumerate(MODES):
        ys = [i + (k - 0.5) * height for i, s in enumerate(rows) if s.tp(mode)]
        stats = [st for s in rows if (st := s.tp(mode))]
        if not stats:
            continue
        ax.barh(
            ys,
            [st.median for st in stats],
            height,
            xerr=errors(stats),
            color=COLOURS[mode],
            capsize=3,
            ecolor="#333333",
            label=f"{mode} submit",
        )
        for y, st in zip(ys, stats, strict=True):
            ax.text(st.high, y, f"  {num(st.median)}", va="center", fontsize=8)
        top = max(top, max(st.high for st in stats))
    ax.set_yticks(list(range(len(rows))), [s.label for s in rows], fontsize=8)
    ax.set_xlabel("tasks / s, submit to every result read (median; bars: min–max over runs)")
    ax.set_title(f"End to end with {HEADLINE_WORKERS} workers (– : no batch API)")
    ax.set_xlim(0, top * 1.2)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, png_dir / "throughput_w2.png")


def plot_workers(loaded: Loaded, png_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt

    rows = loaded.rows(lambda s: any(len(s.throughput.get(m, {})) > 1 for m in MODES))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, s in enumerate(rows):
        for mode, style in zip(MODES, ("-", "--"), strict=True):
            series = s.throughput.get(mode, {})
            if not series:
                continue
            ws = sorted(series)
            colour = colour_of(s, i)
            ax.plot(
                ws,
                [series[w].median for w in ws],
                marker="o",
                linestyle=style,
                color=colour,
                label=f"{s.label}, {mode}",
            )
            ax.fill_between(
                ws,
                [series[w].low for w in ws],
                [series[w].high for w in ws],
                color=colour,
                alpha=0.12,
                linewidth=0,
            )
    counts = sorted({w for s in rows for m in MODES for w in s.throughput.get(m, {})})
    ax.set_xticks(counts)
    ax.set_xlabel("worker processes")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("tasks / s")
    ax.set_title("End to end by worker count (median; band: min–max over runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, png_dir / "throughput_workers.png")


def plot_latency(loaded: Loaded, png_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt

    systems = loaded.rows(lambda s: bool(s.latency_samples))
    if not systems:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    everything = [x for s in systems for x in s.latency_samples]
    positive = [x for x in everything if x > 0]
    log_x = (
        bool(positive) and len(positive) == len(everything) and max(positive) / min(positive) > 20
    )
    for i, s in enumerate(systems):
        xs = sorted(s.latency_samples)
        ys = [(k + 1) / len(xs) for k in range(len(xs))]
        django = s.kind == "pynenc-django"
        ax.step(
            xs,
            ys,
            where="post",
            color=colour_of(s, i),
            linewidth=2.2 if django else 1.3,
            linestyle=":" if is_tuned(s.system) else "-" if django else "--",
            label=f"{s.label} (p50 {num(s.p50.median) if s.p50 else '–'} ms)",
        )
    if log_x:
        ax.set_xscale("log")
    ax.axhline(0.5, color="#777777", linewidth=0.8, linestyle=":")
    ax.axhline(0.99, color="#777777", linewidth=0.8, linestyle=":")
    ax.set_xlabel("round trip, submit to result read (ms)" + (", log scale" if log_x else ""))
    ax.set_ylabel("fraction of calls (all runs)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Round trip distribution (ECDF)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, png_dir / "latency.png")


def plot_seeded(loaded: Loaded, png_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt

    seeded, empty = loaded.summaries.get(SEEDED), loaded.summaries.get(HEADLINE)
    if not seeded or not empty:
        return None
    pairs = [(m, empty.tp(m), seeded.tp(m)) for m in MODES]
    pairs = [(m, e, f) for m, e, f in pairs if e and f]
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = list(range(len(pairs)))
    width = 0.38
    empties = [e for _, e, _ in pairs if e]
    fulls = [f for _, _, f in pairs if f]
    ax.bar(
        [x - width / 2 for x in xs],
        [e.median for e in empties],
        width,
        yerr=errors(empties),
        capsize=4,
        color="#08519c",
        label="empty database",
    )
    ax.bar(
        [x + width / 2 for x in xs],
        [f.median for f in fulls],
        width,
        yerr=errors(fulls),
        capsize=4,
        color="#8fbbe0",
        hatch="//",
        edgecolor="#08519c",
        label=f"{seed_label(loaded)} finished invocations",
    )
    for x, e, f in zip(xs, empties, fulls, strict=True):
        ax.text(
            x + width / 2,
            f.high,
            f"{f.median / e.median:.0%}",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(xs, [f"{m} submit" for m, _, _ in pairs])
    ax.set_ylabel("tasks / s (median; bars: min–max)")
    ax.set_ylim(0, max(max(e.high for e in empties), max(f.high for f in fulls)) * 1.18)
    ax.set_title(f"pynenc-django on PostgreSQL, W={HEADLINE_WORKERS}: empty vs seeded")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, png_dir / "throughput_seeded.png")
