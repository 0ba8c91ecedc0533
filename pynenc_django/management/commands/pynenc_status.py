"""``manage.py pynenc_status``: is pynenc working? Exit 1 when not (a liveness probe)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pynenc_django.conf import ConfigDjango, atomic_service_period
from pynenc_django.db.schema import check_migrated_for_command
from pynenc_django.ops.status import StatusReport, collect_status
from pynenc_django.project import get_app


class Command(BaseCommand):
    help = (
        "Show runners, queue depth, invocations by status and atomic-service health of the "
        "project's pynenc app. Exits 1 when unhealthy: no live runner, atomic services "
        "(triggers, recovery) stalled, or a stuck wait: a running invocation waiting longer "
        "than django_stuck_wait_after_sec for one no worker takes (a queue no live runner "
        "consumes, concurrency control holding it) while its worker runs nothing else."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")
        parser.add_argument("--app-id", help="Inspect another app id on the same database.")
        parser.add_argument(
            "--no-runner-ok",
            action="store_true",
            help="Do not count 'no live runner' as unhealthy (e.g. a web-only probe).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        app = get_app()
        conf = ConfigDjango(config_values=app.config_values)
        alias = str(conf.django_db_alias)
        check_migrated_for_command(alias)
        report = collect_status(
            options.get("app_id") or app.app_id,
            alias,
            dead_after=timedelta(minutes=float(app.conf.runner_considered_dead_after_minutes)),
            atomic_interval=atomic_service_period(app.config_values, app.config_filepath),
            worker_runners=not options["no_runner_ok"],
            stuck_wait_after=timedelta(seconds=float(conf.django_stuck_wait_after_sec)),
        )
        if options["json"]:
            self.stdout.write(json.dumps(report.to_json(), indent=2, sort_keys=True))
        else:
            self.stdout.write(render(report))
        if not report.healthy:
            raise SystemExit(1)


def render(report: StatusReport) -> str:
    lines = [f"pynenc app {report.app_id} at {report.checked_at:%Y-%m-%d %H:%M:%S %Z}"]
    lines.append(f"  runners      {report.runners_alive} alive, {report.runners_dead} dead")
    depth = ", ".join(f"{q}: {n}" for q, n in report.queue_depth.items()) or "empty"
    lines.append(f"  queues       {depth}")
    counts = ", ".join(f"{s}: {n}" for s, n in report.counts_by_status.items()) or "none"
    lines.append(f"  invocations  {counts}")
    if report.oldest_waiting_age_sec is not None:
        lines.append(f"  oldest waiting invocation  {report.oldest_waiting_age_sec:.0f}s")
    runs = ", ".join(f"{s}: {n}" for s, n in report.executions_last_hour.items()) or "none"
    lines.append(f"  atomic services, last hour  {runs}")
    last = report.last_completed_execution
    lines.append(f"  last completed atomic run   {last:%H:%M:%S}" if last else "  never completed")
    lines.append("  status       " + ("healthy" if report.healthy else "UNHEALTHY"))
    lines.extend(f"    - {problem}" for problem in report.problems)
    return "\n".join(lines)
