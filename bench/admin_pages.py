"""Server time and query count of every pynenc admin page at millions of invocations.

    .venv/bin/python bench/admin_pages.py [--count 1000000] [--repeat 7] [--keep-db]
        [--seed-only | --reuse-db]
        [--postgres-url postgres://postgres@127.0.0.1:5432/pynenc_django_admin_bench]

1. Drops and recreates its own PostgreSQL database, the one ``--postgres-url`` names
   (``pynenc_django_admin_bench`` by default; the name must contain "bench", and never be
   the test suite's), migrates it, and seeds ``--count`` invocations with
   ``manage.py pynenc_seed`` (history, arguments, results, exceptions, children, blocking
   edges, queued messages, runners, atomic-service executions, triggers), then
   ``VACUUM ANALYZE`` as autovacuum would after a bulk load. Both times are kept in the
   database's comment. ``--seed-only`` stops there (and keeps the database);
   ``--reuse-db`` skips this step on a database seeded before, and reports its count and
   times.
2. Requests each page with Django's test ``Client`` as a logged-in superuser, in this
   process: the time is the server's (URL resolution, middleware, queries, template
   rendering), without network or browser. One warm-up request, then ``--repeat`` timed
   requests; the median and the maximum are reported, with the number of queries and
   their total database time (``CaptureQueriesContext``) of the last request.
3. Writes ``bench/results/admin-pages-<date>.md`` (``-<date>-10m.md`` for ten million,
   and so on), and drops the database (``--keep-db`` keeps it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
DB_NAME = "pynenc_django_admin_bench"
APP_ID = "admin-bench"


def configure(url: str) -> None:
    import dj_database_url
    import django
    from django.conf import settings

    db = dj_database_url.parse(url, conn_max_age=600)
    settings.configure(
        SECRET_KEY="pynenc-django-admin-bench",
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[
            "pynenc_django",
            "bench.seeding",  # manage.py pynenc_seed
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF="tests.urls",
        STATIC_URL="/static/",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={"default": db},
        # The project's own app is another one: the seeded app is known by its AppInfo.
        PYNENC={"app_id": "admin-bench-project"},
    )
    django.setup()


def db_name(url: str) -> str:
    """The database of ``url``: the bench drops and recreates it, so it must be its own."""
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    if "bench" not in name:
        raise SystemExit(f"{name!r}: the bench drops its database; use one named *bench*")
    return name


def recreate_database(url: str) -> None:
    import psycopg

    name = db_name(url)
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            [name],
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    from django.db import connections

    connections.close_all()
    import psycopg

    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name(url)}"')


def seed(count: int, url: str) -> dict[str, float]:
    """Seeds and vacuums; the timings are kept in the database's comment, so a later
    ``--reuse-db`` run reports them too."""
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    call_command("pynenc_seed", app_id=APP_ID, count=count, verbosity=2)
    seeded = time.monotonic() - started
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    info = {"count": count, "seed_s": seeded, "vacuum_s": time.monotonic() - started}
    with connection.cursor() as cursor:
        cursor.execute(f"COMMENT ON DATABASE \"{db_name(url)}\" IS '{json.dumps(info)}'")
    return info


def seed_info(url: str) -> dict[str, float] | None:
    """What :func:`seed` recorded about an already seeded database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [db_name(url)],
        )
        row = cursor.fetchone()
    return json.loads(row[0]) if row and row[0] else None


def pages(count: int) -> list[tuple[str, str]]:
    """(label, url) of every changelist, the filters and deep pages, and a detail page
    of each model."""
    from django.urls import reverse

    from pynenc_django import models as m

    def cl(model: Any, query: str = "") -> str:
        url = reverse(f"admin:pynenc_django_{model._meta.model_name}_changelist")
        return f"{url}?app_id={APP_ID}{query}"

    def detail(obj: Any) -> str:
        return reverse(f"admin:pynenc_django_{obj._meta.model_name}_change", args=[obj.pk])

    from django.contrib import admin

    from pynenc_django.admin.base import PAGED_ROWS

    inv = m.Invocation.objects.filter(app_id=APP_ID)
    last = inv.order_by("-registered_at").first()
    parent = inv.filter(invocation_id__endswith=f"-inv-{count // 2 // 50 * 50:09d}").first()
    middle, deepest = count // 50 // 2, count // 50 - 1
    offered = PAGED_ROWS // 50  # the last page a long list offers
    # The registered-at column's sort link (after the action checkbox).
    oldest_first = admin.site._registry[m.Invocation].list_display.index("registered_at") + 1
    message = m.BrokerMessage.objects.filter(app_id=APP_ID).order_by("id").last()
    failed = inv.filter(status="failed").order_by("-registered_at").first()
    at = last.registered_at
    result = [
        ("Invocations: list", cl(m.Invocation)),
        ("Invocations: status=running", cl(m.Invocation, "&status=running")),
        ("Invocations: status=success", cl(m.Invocation, "&status=success")),
        ("Invocations: task=send_email", cl(m.Invocation, "&task=seed.tasks.send_email")),
        ("Invocations: queue=payments", cl(m.Invocation, "&queue=payments")),
        (
            "Invocations: one day (date hierarchy)",
            cl(
                m.Invocation,
                f"&registered_at__year={at.year}&registered_at__month={at.month}"
                f"&registered_at__day={at.day}",
            ),
        ),
        ("Invocations: search by id", cl(m.Invocation, f"&q={parent.invocation_id}")),
        ("Invocations: page 100", cl(m.Invocation, "&p=100")),
        (
            f"Invocations: page {offered} (offset {(offered - 1) * 50:,}, the last offered)",
            cl(m.Invocation, f"&p={offered}"),
        ),
        (
            f"Invocations: page {middle:,} (past the last: shows page {offered})",
            cl(m.Invocation, f"&p={middle}"),
        ),
        (
            f"Invocations: page {deepest:,} (past the last: shows page {offered})",
            cl(m.Invocation, f"&p={deepest}"),
        ),
        (
            "Invocations: status=running, page 99,999 (past the last offered)",
            cl(m.Invocation, "&status=running&p=99999"),
        ),
        (
            "Invocations: status=killed, page 99,999 (past the last offered)",
            cl(m.Invocation, "&status=killed&p=99999"),
        ),
        ("Invocations: oldest first (sorted)", cl(m.Invocation, f"&o={oldest_first}")),
        (
            f"Invocations: oldest first, page {offered}",
            cl(m.Invocation, f"&o={oldest_first}&p={offered}"),
        ),
        ("Invocation: fan-out parent (history, children, edges)", detail(parent)),
        ("Invocation: failed (exception)", detail(failed)),
        ("Invocation: newest", detail(last)),
        ("Runners: list", cl(m.RunnerHeartbeat)),
        (
            "Runner: detail",
            detail(m.RunnerHeartbeat.objects.get(app_id=APP_ID, runner_id="seed-runner-0")),
        ),
        ("Atomic executions: list", cl(m.AtomicServiceExecution)),
        ("Atomic executions: status=blocked", cl(m.AtomicServiceExecution, "&status=blocked")),
        (
            "Atomic execution: detail",
            detail(
                m.AtomicServiceExecution.objects.filter(app_id=APP_ID, status="blocked").first()
            ),
        ),
        ("Blocking edges: list", cl(m.BlockingEdge)),
        ("Blocking edge: detail", detail(m.BlockingEdge.objects.filter(app_id=APP_ID).first())),
        ("Broker messages: list", cl(m.BrokerMessage)),
        ("Broker messages: queue=payments", cl(m.BrokerMessage, "&queue=payments")),
        (
            "Broker messages: search by invocation id",
            cl(m.BrokerMessage, f"&q={message.invocation_id}"),
        ),
        ("Broker message: detail", detail(m.BrokerMessage.objects.filter(app_id=APP_ID).first())),
        ("Runner contexts: list", cl(m.RunnerContextRecord)),
        (
            "Runner context: detail",
            detail(m.RunnerContextRecord.objects.filter(app_id=APP_ID).first()),
        ),
        ("Trigger definitions: list", cl(m.TriggerDefinitionEntry)),
        (
            "Trigger definition: detail",
            detail(m.TriggerDefinitionEntry.objects.filter(app_id=APP_ID).first()),
        ),
        ("Trigger conditions: list", cl(m.TriggerConditionEntry)),
        (
            "Trigger condition: detail",
            detail(m.TriggerConditionEntry.objects.filter(app_id=APP_ID).first()),
        ),
        ("Events: list", cl(m.EventEntry)),
        ("Event: detail", detail(m.EventEntry.objects.filter(app_id=APP_ID).first())),
        ("Trigger runs: list", cl(m.TriggerRunEntry)),
        ("Trigger run: detail", detail(m.TriggerRunEntry.objects.filter(app_id=APP_ID).first())),
        ("Overview", f"{reverse('admin:pynenc_django_overview')}?app_id={APP_ID}"),
    ]
    return result


def measure(repeat: int, count: int) -> list[dict[str, Any]]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    rows = []
    for label, url in pages(count):
        response = client.get(url)  # warm-up: caches, connection, statistics
        assert response.status_code == 200, (label, url, response.status_code)
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (label, url)
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        db_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
        rows.append(
            {
                "page": label,
                "url": url,
                "queries": len(queries.captured_queries),
                "median_ms": statistics.median(times),
                "max_ms": max(times),
                "db_ms": db_ms,
            }
        )
        print(
            f"{label:60s} {rows[-1]['queries']:3d} q  {rows[-1]['median_ms']:7.1f} ms", flush=True
        )
    return rows


def row_counts() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_live_tup FROM pg_stat_user_tables "
            "WHERE relname LIKE 'pynenc_%%' ORDER BY n_live_tup DESC"
        )
        return {name: int(n) for name, n in cursor.fetchall() if n}


def write_report(
    rows: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, float] | None
) -> Path:
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    RESULTS_DIR.mkdir(exist_ok=True)
    suffix = "" if args.count == 1_000_000 else f"-{args.count / 1_000_000:g}m"
    path = RESULTS_DIR / f"admin-pages-{dt.date.today().isoformat()}{suffix}.md"
    budget_ok = all(
        r["queries"] <= 10 and r["median_ms"] <= 300 and r["max_ms"] <= 300 for r in rows
    )
    lines = [
        f"# Admin pages at {args.count:,} invocations (PostgreSQL)",
        "",
        f"`bench/admin_pages.py --count {args.count} --repeat {args.repeat}`, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. PostgreSQL {pg_version}, "
        f"Django {django.get_version()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores. Server time per request (Django test client in the same "
        "process: middleware, queries, template rendering; no network), median and maximum "
        f"of {args.repeat} requests after one warm-up; queries and their database time of "
        "one more request (superuser: session and user lookups included).",
        "",
        "Budget: at most 10 queries and 300 ms (median and maximum) per page — "
        f"{'met by every page' if budget_ok else 'NOT met by every page'}.",
        "",
    ]
    if info is not None:
        lines += [
            f"Seeding took {info['seed_s']:.0f} s (`pynenc_seed`, COPY, with its own "
            f"`ANALYZE` of each table), then `VACUUM ANALYZE` {info['vacuum_s']:.0f} s"
            + (
                " (by an earlier `--seed-only` run; these pages were measured with `--reuse-db`)."
                if args.reuse_db
                else "."
            ),
            "",
        ]
    lines += ["| page | queries | median ms | max ms | db ms |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['page']} | {r['queries']} | {r['median_ms']:.1f} | {r['max_ms']:.1f} | {r['db_ms']:.1f} |"
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    lines += [
        "",
        f"Rows in the bench database ({size}; `n_live_tup` of `pg_stat_user_tables`, the "
        "statistics' count after `VACUUM ANALYZE`):",
        "",
        "| table | rows |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {n:,} |" for name, n in row_counts().items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--postgres-url", default=f"postgres://postgres@127.0.0.1:5432/{DB_NAME}")
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse-db", action="store_true", help="measure an already seeded database"
    )
    parser.add_argument(
        "--seed-only", action="store_true", help="seed and keep the database, measure nothing"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if not args.reuse_db:
        recreate_database(args.postgres_url)
    configure(args.postgres_url)
    if args.reuse_db:
        info = seed_info(args.postgres_url)
        if info is not None:
            args.count = int(info["count"])
    else:
        info = seed(args.count, args.postgres_url)
        print(f"seeded in {info['seed_s']:.0f} s, vacuumed in {info['vacuum_s']:.0f} s", flush=True)
    if args.seed_only:
        return 0
    rows = measure(args.repeat, args.count)
    path = write_report(rows, args, info)
    print(f"results: {path.relative_to(REPO)}")
    if not args.keep_db:
        drop_database(args.postgres_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
