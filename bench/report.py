"""Aggregate the raw JSON of a ``make bench`` run into ``bench/results/<date>.md`` and plots.

``render(raw_dir, out_md, png_dir)`` reads every ``<system>.json`` the measurement scripts
wrote (``bench.throughput``, ``bench.peers.*``) and the driver's ``_run.json`` (machine,
servers, which system failed or was skipped and why). Every figure is the median over the
runs, with the minimum and maximum; budgets compare medians. Anything missing (a system
that failed, a key a script does not measure) is shown as such rather than guessed, and a
budget without its data counts as not met.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.runner_idle_wake import percentile  # noqa: E402  (linear interpolation)

MANIFEST = "_run.json"
HEADLINE_WORKERS = 2
# Report order: the subject first, then the reference, then the peers.
SYSTEM_ORDER = (
    "pynenc-django-postgresql",
    "pynenc-django-mariadb",
    "pynenc-django-sqlite",
    "pynenc-sqlite",
    "procrastinate",
    "django-tasks-db",
    "celery-redis",
)
DJANGO_SYSTEMS = ("pynenc-django-postgresql", "pynenc-django-mariadb", "pynenc-django-sqlite")
HEADLINE = "pynenc-django-postgresql"
REFERENCE = "pynenc-sqlite"
PEER = "procrastinate"
MAX_STATEMENTS_PER_LIFECYCLE = 15.0
MAX_IDLE_STATEMENTS_PER_S = 5.0
MIN_VS_REFERENCE = 4.0
MIN_1M_RATIO = 0.9
PLOTS = ("throughput_w2.png", "throughput_workers.png", "latency.png", "throughput_1m.png")
COLOURS = {"pynenc-django": "#1f77b4", "pynenc-reference": "#ff9f40", "peer": "#9a9a9a"}
# One colour per system across the line plots: pynenc-django in blues.
SYSTEM_COLOURS = {
    "pynenc-django-postgresql": "#08519c",
    "pynenc-django-mariadb": "#3182bd",
    "pynenc-django-sqlite": "#6baed6",
    "pynenc-sqlite": "#ff9f40",
    "procrastinate": "#7b4ea3",
    "django-tasks-db": "#2ca02c",
    "celery-redis": "#8c564b",
}


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
    """One system's runs, aggregated."""

    system: str
    label: str
    kind: str
    database: str
    versions: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str]
    runs: int
    fake: bool
    throughput: dict[int, Stat] = field(default_factory=dict)
    throughput_1m: dict[int, Stat] = field(default_factory=dict)
    ratio_1m: Stat | None = None  # per-run 1M/empty at HEADLINE_WORKERS
    submit_single: Stat | None = None
    submit_batch: Stat | None = None
    p50: Stat | None = None
    p99: Stat | None = None
    latency_samples: list[float] = field(default_factory=list)
    statements: Stat | None = None
    queries: Stat | None = None
    idle: Stat | None = None
    breakdown: list[tuple[str, float]] = field(default_factory=list)
    breakdown_runs: int = 0
    # MariaDB: the runner sharing no signal files with the client (as on another host).
    across_p50: Stat | None = None
    across_statements: Stat | None = None


def summarise(payload: dict[str, Any], name: str) -> Summary:
    runs = [r for r in payload.get("runs") or [] if isinstance(r, dict)]
    system = str(payload.get("system") or name)
    summary = Summary(
        system=system,
        label=str(payload.get("label") or system),
        kind=str(payload.get("kind") or guess_kind(system)),
        database=str(payload.get("database") or "–"),
        versions=payload.get("versions") if isinstance(payload.get("versions"), dict) else {},
        settings=payload.get("settings") if isinstance(payload.get("settings"), dict) else {},
        notes=[str(n) for n in payload.get("notes") or []],
        runs=len(runs),
        fake=bool(payload.get("fixture")),
    )
    empty = [by_workers(r.get("throughput")) for r in runs]
    full = [by_workers(r.get("throughput_1m")) for r in runs]
    summary.throughput = workers_stats(empty)
    summary.throughput_1m = workers_stats(full)
    summary.ratio_1m = stat(
        f[HEADLINE_WORKERS] / e[HEADLINE_WORKERS]
        for e, f in zip(empty, full, strict=True)
        if e.get(HEADLINE_WORKERS) and HEADLINE_WORKERS in f
    )
    summary.submit_single = stat(r.get("submit_single_per_s") for r in runs)
    summary.submit_batch = stat(r.get("submit_batch_per_s") for r in runs)
    latencies = [samples(r.get("latency_ms")) for r in runs]
    summary.p50 = stat(percentile(s, 50) for s in latencies if s)
    summary.p99 = stat(percentile(s, 99) for s in latencies if s)
    summary.latency_samples = [x for s in latencies for x in s]
    summary.statements = stat(r.get("statements_per_lifecycle") for r in runs)
    summary.queries = stat(r.get("queries_per_lifecycle") for r in runs)
    summary.idle = stat(r.get("idle_statements_per_s") for r in runs)
    across = [r["across_hosts"] for r in runs if isinstance(r.get("across_hosts"), dict)]
    summary.across_p50 = stat(
        percentile(s, 50) for s in (samples(a.get("latency_ms")) for a in across) if s
    )
    summary.across_statements = stat(a.get("statements_per_lifecycle") for a in across)
    breakdowns = [
        r["statement_breakdown"] for r in runs if isinstance(r.get("statement_breakdown"), dict)
    ]
    if breakdowns:
        # Median per statement over the runs that report a breakdown (absent = 0 in that run).
        keys = {k for b in breakdowns for k in b}
        medians = {
            k: statistics.median(as_float(b.get(k)) or 0.0 for b in breakdowns) for k in keys
        }
        summary.breakdown = sorted(medians.items(), key=lambda kv: (-kv[1], kv[0]))
        summary.breakdown_runs = len(breakdowns)
    return summary


def workers_stats(per_run: list[dict[int, float]]) -> dict[int, Stat]:
    counts = sorted({w for run in per_run for w in run})
    out = {}
    for w in counts:
        s = stat(run.get(w) for run in per_run)
        if s is not None:
            out[w] = s
    return out


def samples(value: Any) -> list[float]:
    if not isinstance(value, list):
        return []
    return [v for v in (as_float(x) for x in value) if v is not None]


def guess_kind(system: str) -> str:
    if system in DJANGO_SYSTEMS:
        return "pynenc-django"
    return "pynenc-reference" if system == REFERENCE else "peer"


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


def load(raw_dir: Path) -> Loaded:
    """Every ``*.json`` in ``raw_dir`` (not its subdirectories, which hold earlier runs)."""
    summaries: dict[str, Summary] = {}
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
            summary = summarise(payload, path.stem)
            summaries[summary.system] = summary
        else:
            unreadable[path.name] = "not a measurement (no `runs`)"
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
    """Why a system has no data: failed, skipped (and why), or not part of the run."""
    status = loaded.status(system)
    if status.get("status"):
        reason = str(status.get("reason") or "").strip()
        return f"{system} {status['status']}" + (f": {reason}" if reason else "")
    return f"{system} not in this run"


def missing(loaded: Loaded, system: str, what: str) -> str:
    """Why a figure is absent: the system has no data, or its data lacks the figure."""
    if system in loaded.summaries:
        return f"n/a ({system}: no {what} in its data)"
    return f"n/a ({absent(loaded, system)})"


def w2(loaded: Loaded, system: str) -> Stat | None:
    summary = loaded.summaries.get(system)
    return summary.throughput.get(HEADLINE_WORKERS) if summary else None


def budgets(loaded: Loaded) -> list[Budget]:
    out: list[Budget] = []
    w = f"W={HEADLINE_WORKERS}"
    head, ref, peer = w2(loaded, HEADLINE), w2(loaded, REFERENCE), w2(loaded, PEER)
    name = f"{HEADLINE} throughput ({w}) ≥ {MIN_VS_REFERENCE:g} × {REFERENCE}"
    if head and ref:
        ratio = head.median / ref.median
        measured = f"{num(head.median)} vs {num(ref.median)} tasks/s: {ratio:.2f}×"
        out.append(Budget(name, f"≥ {MIN_VS_REFERENCE:g}×", measured, ratio >= MIN_VS_REFERENCE))
    else:
        which = REFERENCE if head else HEADLINE
        out.append(
            Budget(
                name,
                f"≥ {MIN_VS_REFERENCE:g}×",
                missing(loaded, which, f"throughput at {w}"),
                False,
            )
        )

    name = f"{HEADLINE} throughput ({w}) ≥ {PEER}"
    if head and peer:
        ratio = head.median / peer.median
        measured = f"{num(head.median)} vs {num(peer.median)} tasks/s: {ratio:.2f}×"
        out.append(Budget(name, "≥ 1×", measured, ratio >= 1))
    else:
        which = PEER if head else HEADLINE
        out.append(Budget(name, "≥ 1×", missing(loaded, which, f"throughput at {w}"), False))

    name = f"{HEADLINE} latency p50 ≤ {PEER}"
    mine = loaded.summaries.get(HEADLINE)
    theirs = loaded.summaries.get(PEER)
    if mine and mine.p50 and theirs and theirs.p50:
        measured = f"{num(mine.p50.median)} vs {num(theirs.p50.median)} ms"
        out.append(Budget(name, "≤ 1×", measured, mine.p50.median <= theirs.p50.median))
    else:
        which = PEER if mine and mine.p50 else HEADLINE
        out.append(Budget(name, "≤ 1×", missing(loaded, which, "latency samples"), False))

    for system in DJANGO_SYSTEMS:
        summary = loaded.summaries.get(system)
        name = f"{system} statements per lifecycle" + (" (headline)" if system == HEADLINE else "")
        target = f"≤ {MAX_STATEMENTS_PER_LIFECYCLE:g}"
        if summary and summary.statements:
            value = summary.statements.median
            out.append(Budget(name, target, num(value), value <= MAX_STATEMENTS_PER_LIFECYCLE))
        else:
            out.append(
                Budget(name, target, missing(loaded, system, "statements_per_lifecycle"), False)
            )

    for system in DJANGO_SYSTEMS:
        summary = loaded.summaries.get(system)
        name = f"{system} idle statements/s, one worker"
        target = f"≤ {MAX_IDLE_STATEMENTS_PER_S:g}"
        if summary and summary.idle:
            value = summary.idle.median
            out.append(Budget(name, target, num(value), value <= MAX_IDLE_STATEMENTS_PER_S))
        else:
            out.append(
                Budget(name, target, missing(loaded, system, "idle_statements_per_s"), False)
            )

    name = f"{HEADLINE} throughput ({w}) with 1M finished invocations ≥ {MIN_1M_RATIO:.0%} of empty"
    target = f"≥ {MIN_1M_RATIO:.0%}"
    full = mine.throughput_1m.get(HEADLINE_WORKERS) if mine else None
    if head and full:
        ratio = full.median / head.median
        measured = f"{num(full.median)} vs {num(head.median)} tasks/s: {ratio:.0%}"
        out.append(Budget(name, target, measured, ratio >= MIN_1M_RATIO))
    elif mine and (loaded.manifest.get("args") or {}).get("no_million"):
        out.append(Budget(name, target, "n/a (not measured: --no-million)", False))
    else:
        out.append(Budget(name, target, missing(loaded, HEADLINE, f"throughput_1m at {w}"), False))
    return out


# ---------------------------------------------------------------------------- markdown


@dataclass
class Rendered:
    """What ``render`` wrote, and what the driver's exit status depends on."""

    markdown: Path
    plots: list[Path]
    budgets: list[Budget]
    problems: list[str]  # systems that failed or were skipped, unreadable files

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
    lines += [
        "Throughput, submit rate, latency and SQL cost of pynenc-django on SQLite, PostgreSQL and "
        "MariaDB, against pynenc 0.4's own SQLite backend (the reference) and three peers, "
        "all measured in one run on one machine. Every figure is the **median over the runs "
        "(min–max)**. Budgets: "
        f"**{met} of {len(checks)} met**.",
        "",
        "## How to reproduce",
        "",
        "```console",
        "make bench                                   # every system, 3 runs each",
        "make bench BENCH_ARGS='--quick --runs 1'     # a quick look",
        ".venv/bin/python -m bench.bench --help       # --systems, --no-million, --report-only, ...",
        "```",
        "",
        f"Raw JSON of this run: `{raw_shown}/`{ignored}; "
        f"`.venv/bin/python -m bench.bench --report-only {raw_shown}` renders this file again.",
        "",
    ]
    if command := manifest.get("command"):
        lines += [f"This run: `{command}`", ""]
    lines += machine_section(loaded)
    lines += run_section(loaded)
    lines += summary_section(loaded, links)
    lines += budget_section(checks)
    lines += workers_section(loaded, links)
    lines += million_section(loaded, links)
    lines += latency_section(loaded, links)
    lines += details_section(loaded)
    return "\n".join(lines).rstrip() + "\n"


def machine_section(loaded: Loaded) -> list[str]:
    manifest = loaded.manifest
    machine = manifest.get("machine") or {}
    lines = ["## Machine", ""]
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
        "The machine has few cores and other test suites may share it and the database servers: "
        "expect noise between runs, and compare runs made on the same machine.",
        "",
    ]
    return lines


def run_section(loaded: Loaded) -> list[str]:
    systems = loaded.manifest.get("systems") or {}
    if not systems and not loaded.unreadable:
        return []
    lines = ["## Systems run", ""]
    if systems:
        lines += ["| system | status | wall time | exit code |", "|---|---|---|---|"]
        for system, entry in sorted(systems.items(), key=lambda kv: system_key(kv[0])):
            entry = entry if isinstance(entry, dict) else {}
            status = str(entry.get("status", "?"))
            shown = status if status == "ok" else f"**{status}**"
            if entry.get("reason"):
                shown += f": {md_escape(str(entry['reason']))}"
            code = entry.get("returncode")
            lines.append(
                f"| {system} | {shown} | {duration(entry.get('seconds'))} | {'–' if code is None else code} |"
            )
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


def summary_section(loaded: Loaded, links: dict[str, str]) -> list[str]:
    w = HEADLINE_WORKERS
    lines = [
        "## Summary",
        "",
        f"| system | database | throughput W={w} (tasks/s) | submit single (/s) | submit batch (/s) "
        "| latency p50 (ms) | latency p99 (ms) | statements / lifecycle | idle statements/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in loaded.summaries.values():
        name = f"**{s.label}**" if s.kind == "pynenc-django" else s.label
        lines.append(
            f"| {md_escape(name)} | {md_escape(s.database)} | {cell(s.throughput.get(w))} "
            f"| {cell(s.submit_single)} | {cell(s.submit_batch)} | {cell(s.p50)} | {cell(s.p99)} "
            f"| {cell(s.statements)} | {cell(s.idle)} |"
        )
    systems = loaded.manifest.get("systems") or {}
    gone = sorted((x for x in systems if x not in loaded.summaries), key=system_key)
    lines += [
        "",
        f"Throughput: tasks per second with W={w} worker processes, from the first submit to the "
        "last result. Latency: one call at a time, submit to result, per run p50 and p99 "
        "(linear interpolation), then their median (min–max) over the runs. Statements per "
        "lifecycle and idle statements/s: as the scripts count them (see each system's notes "
        "below; pynenc's own SQLite backend counts every engine statement, `PRAGMA`s included). "
        "– : not measured for that system.",
        "",
    ]
    if gone:
        lines += ["Not in the table: " + "; ".join(absent(loaded, x) for x in gone) + ".", ""]
    if "throughput_w2.png" in links:
        lines += [f"![Throughput at W={w}]({links['throughput_w2.png']})", ""]
    return lines


def budget_section(checks: list[Budget]) -> list[str]:
    lines = [
        "## Budgets",
        "",
        "Medians of this run. A budget whose data is missing counts as not met.",
        "",
        "| # | budget | target | measured | verdict |",
        "|---:|---|---|---|---|",
    ]
    lines += [
        f"| {i} | {md_escape(b.name)} | {b.target} | {md_escape(b.measured)} | {b.verdict} |"
        for i, b in enumerate(checks, 1)
    ]
    return [*lines, ""]


def workers_section(loaded: Loaded, links: dict[str, str]) -> list[str]:
    counts = sorted({w for s in loaded.summaries.values() for w in s.throughput})
    if not counts:
        return []
    lines = [
        "## Throughput by worker count",
        "",
        "Tasks per second, median (min–max) over the runs.",
        "",
        "| system | " + " | ".join(f"W={w}" for w in counts) + " |",
        "|---|" + "---:|" * len(counts),
    ]
    for s in loaded.summaries.values():
        lines.append(
            f"| {md_escape(s.label)} | "
            + " | ".join(cell(s.throughput.get(w)) for w in counts)
            + " |"
        )
    lines.append("")
    if "throughput_workers.png" in links:
        lines += [f"![Throughput by worker count]({links['throughput_workers.png']})", ""]
    return lines


def million_section(loaded: Loaded, links: dict[str, str]) -> list[str]:
    lines = ["## With a million finished invocations", ""]
    rows = []
    for s in loaded.summaries.values():
        for w, full in sorted(s.throughput_1m.items()):
            empty = s.throughput.get(w)
            ratio = f"{full.median / empty.median:.0%}" if empty else "–"
            per_run = s.ratio_1m if w == HEADLINE_WORKERS else None
            spread = f"{per_run.low:.0%}–{per_run.high:.0%}" if per_run and per_run.n > 1 else "–"
            seeded = as_float(s.settings.get("million"))
            rows.append(
                f"| {md_escape(s.label)} | {num(seeded) if seeded else '–'} | {w} | {cell(empty)} | {cell(full)} | {ratio} | {spread} |"
            )
    if not rows:
        reason = missing(loaded, HEADLINE, "throughput_1m")
        if (loaded.manifest.get("args") or {}).get("no_million"):
            reason = "n/a (not measured: --no-million)"
        return [*lines, f"Not measured in this run: {reason}.", ""]
    lines += [
        "The same throughput measurement after seeding finished invocations into the same database: "
        "does a full history slow the queue down?",
        "",
        "| system | seeded | W | empty (tasks/s) | seeded (tasks/s) | seeded / empty (medians) | per-run ratio (min–max) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    if "throughput_1m.png" in links:
        lines += [
            f"![Throughput, empty vs 1M finished invocations]({links['throughput_1m.png']})",
            "",
        ]
    return lines


def latency_section(loaded: Loaded, links: dict[str, str]) -> list[str]:
    measured = [s for s in loaded.summaries.values() if s.latency_samples]
    if not measured:
        return []
    lines = [
        "## Latency",
        "",
        "| system | calls (all runs) | p50 (ms) | p99 (ms) | min (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in measured:
        lines.append(
            f"| {md_escape(s.label)} | {len(s.latency_samples)} | {cell(s.p50)} | {cell(s.p99)} "
            f"| {num(min(s.latency_samples))} | {num(max(s.latency_samples))} |"
        )
    lines += [
        "",
        "p50 and p99 per run, then median (min–max) over runs; min and max over every call.",
        "",
    ]
    if "latency.png" in links:
        lines += [f"![Latency distribution]({links['latency.png']})", ""]
    return lines


def details_section(loaded: Loaded) -> list[str]:
    lines = ["## Per system", ""]
    for s in loaded.summaries.values():
        lines += [f"### {md_escape(s.label)}", ""]
        rows: list[tuple[str, str]] = [
            ("system", f"`{s.system}` ({s.kind})"),
            ("database", s.database),
            ("runs", str(s.runs)),
        ]
        if s.versions:
            rows.append(("versions", ", ".join(f"{k} {v}" for k, v in s.versions.items())))
        if s.settings:
            rows.append(
                (
                    "settings",
                    ", ".join(
                        f"{k}: {fmt_setting(v)}" for k, v in s.settings.items() if v is not None
                    ),
                )
            )
        rows += [
            ("statements / lifecycle", cell(s.statements)),
            ("queries / lifecycle (no BEGIN/COMMIT/SAVEPOINT/PRAGMA)", cell(s.queries)),
            ("idle statements/s, one worker", cell(s.idle)),
        ]
        if s.across_statements is not None:
            rows += [
                ("runner as on another host: round trip p50 (ms)", cell(s.across_p50)),
                ("runner as on another host: statements / lifecycle", cell(s.across_statements)),
            ]
        lines += ["| | |", "|---|---|"]
        lines += [f"| {k} | {md_escape(v)} |" for k, v in rows]
        lines.append("")
        if s.notes:
            lines += ["Configuration and notes:", ""]
            lines += [f"- {' '.join(n.split())}" for n in s.notes]
            lines.append("")
        if s.breakdown:
            top = s.breakdown[:15]
            rest = s.breakdown[15:]
            lines += [
                f"Statements per lifecycle by statement (median over {s.breakdown_runs} run"
                f"{'s' if s.breakdown_runs != 1 else ''}, top {len(top)}):",
                "",
                "| per lifecycle | statement |",
                "|---:|---|",
            ]
            lines += [f"| {num(n)} | {sql_cell(sql)} |" for sql, n in top]
            if rest:
                lines.append(
                    f"| {num(sum(n for _, n in rest))} | *{len(rest)} other statement{'s' if len(rest) != 1 else ''}* |"
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
    for draw in (plot_w2, plot_workers, plot_latency, plot_million):
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
    from matplotlib.patches import Patch

    rows = [
        (s, s.throughput[HEADLINE_WORKERS])
        for s in loaded.summaries.values()
        if HEADLINE_WORKERS in s.throughput
    ]
    if not rows:
        return None
    rows.reverse()  # barh draws bottom-up: keep the report's order top-down
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 2.0))
    y = range(len(rows))
    stats = [st for _, st in rows]
    ax.barh(
        y,
        [st.median for st in stats],
        xerr=errors(stats),
        color=[COLOURS.get(s.kind, COLOURS["peer"]) for s, _ in rows],
        edgecolor=["#0b3d66" if s.kind == "pynenc-django" else "none" for s, _ in rows],
        linewidth=1.5,
        capsize=4,
        ecolor="#333333",
    )
    ax.set_yticks(list(y), [s.label for s, _ in rows])
    for i, st in enumerate(stats):
        ax.text(st.high, i, f"  {num(st.median)}", va="center", fontsize=9)
    ax.set_xlabel("tasks / s (median; bars: min–max over runs)")
    ax.set_title(f"Throughput with {HEADLINE_WORKERS} workers")
    ax.set_xlim(0, max(st.high for st in stats) * 1.18)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[
            Patch(color=COLOURS["pynenc-django"], label="pynenc-django"),
            Patch(color=COLOURS["pynenc-reference"], label="pynenc 0.4 SQLite (reference)"),
            Patch(color=COLOURS["peer"], label="peers"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1 - 0.3 / len(rows)),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    return save(fig, png_dir / "throughput_w2.png")


def plot_workers(loaded: Loaded, png_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt

    systems = [s for s in loaded.summaries.values() if s.throughput]
    if not systems:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, s in enumerate(systems):
        ws = sorted(s.throughput)
        med = [s.throughput[w].median for w in ws]
        django = s.kind == "pynenc-django"
        colour = colour_of(s, i)
        ax.plot(
            ws,
            med,
            marker="o",
            linewidth=2.4 if django else 1.4,
            linestyle="-" if django else "--",
            color=colour,
            label=s.label,
        )
        ax.fill_between(
            ws,
            [s.throughput[w].low for w in ws],
            [s.throughput[w].high for w in ws],
            color=colour,
            alpha=0.15,
            linewidth=0,
        )
    counts = sorted({w for s in systems for w in s.throughput})
    ax.set_xticks(counts)
    ax.set_xlabel("worker processes")
    values = [st.median for s in systems for st in s.throughput.values()]
    if min(values) > 0 and max(values) / min(values) > 10:
        # A fast peer would flatten every other line onto the axis on a linear scale.
        from matplotlib.ticker import LogLocator, ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_ylabel("tasks / s (log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("tasks / s")
    ax.set_title("Throughput by worker count (median; band: min–max over runs)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, png_dir / "throughput_workers.png")


def plot_latency(loaded: Loaded, png_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt

    systems = [s for s in loaded.summaries.values() if s.latency_samples]
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
        colour = colour_of(s, i)
        django = s.kind == "pynenc-django"
        ax.step(
            xs,
            ys,
            where="post",
            color=colour,
            linewidth=2.2 if django else 1.3,
            linestyle="-" if django else "--",
            label=f"{s.label} (p50 {num(s.p50.median) if s.p50 else '–'} ms)",
        )
        if s.p50:
            at = sum(x <= s.p50.median for x in xs) / len(xs)
            ax.plot(
                [s.p50.median],
                [at],
                marker="o",
                color=colour,
                markersize=7,
                markeredgecolor="black",
            )
    if log_x:
        ax.set_xscale("log")
    ax.axhline(0.5, color="#777777", linewidth=0.8, linestyle=":")
    ax.axhline(0.99, color="#777777", linewidth=0.8, linestyle=":")
    ax.set_xlabel("latency, submit to result (ms)" + (", log scale" if log_x else ""))
    ax.set_ylabel("fraction of calls (all runs)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Latency distribution (ECDF; dot: p50 of the table)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, png_dir / "latency.png")


def plot_million(loaded: Loaded, png_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt

    rows = []
    for s in loaded.summaries.values():
        if s.kind != "pynenc-django":
            continue
        for w in sorted(s.throughput_1m):
            if w in s.throughput:
                rows.append((f"{s.label}\nW={w}", s.throughput[w], s.throughput_1m[w]))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(rows) + 2), 5))
    xs = list(range(len(rows)))
    width = 0.38
    empty = [r[1] for r in rows]
    full = [r[2] for r in rows]
    ax.bar(
        [x - width / 2 for x in xs],
        [s.median for s in empty],
        width,
        yerr=errors(empty),
        capsize=4,
        color=COLOURS["pynenc-django"],
        label="empty database",
    )
    ax.bar(
        [x + width / 2 for x in xs],
        [s.median for s in full],
        width,
        yerr=errors(full),
        capsize=4,
        color="#8fbbe0",
        hatch="//",
        edgecolor="#1f77b4",
        label="1M finished invocations",
    )
    for x, e, f in zip(xs, empty, full, strict=True):
        ax.text(
            x + width / 2,
            f.high,
            f"{f.median / e.median:.0%} of empty",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(xs, [r[0] for r in rows], fontsize=9)
    ax.set_xlim(-0.9, len(rows) - 0.1)
    ax.set_ylabel("tasks / s (median; bars: min–max)")
    ax.set_ylim(0, max(max(s.high for s in empty), max(s.high for s in full)) * 1.15)
    ax.set_title("Throughput, empty vs 1M finished invocations")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, png_dir / "throughput_1m.png")
