"""``manage.py pynenc_purge``: retention for pynenc's tables, in small batches."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from pynenc.invocation.status import InvocationStatus

from pynenc_django.conf import ConfigDjango
from pynenc_django.db.schema import check_migrated_for_command
from pynenc_django.ops.retention import FINAL_STATUSES, purge
from pynenc_django.project import get_app
from pynenc_django.utils import now_utc

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def age(value: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w`` or ``45s``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if not match:
        raise ValueError(value)
    return timedelta(**{UNITS[match[2]]: float(match[1])})


class Command(BaseCommand):
    help = (
        "Delete finished invocations (and their arguments, history, results, exceptions, "
        "blocking edges), old events, trigger runs, atomic-service executions, dead "
        "runners' heartbeats and unreferenced client data, older than --older-than."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", type=age, required=True, help="Age, e.g. 30d, 12h, 90m."
        )
        parser.add_argument(
            "--status",
            default=",".join(s.value for s in FINAL_STATUSES),
            help="Comma-separated final statuses to purge (default: all final ones).",
        )
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--app-id", help="Another app id on the same database.")
        parser.add_argument("--dry-run", action="store_true", help="Only count.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            statuses = [InvocationStatus(s.strip()) for s in options["status"].split(",")]
        except ValueError as exc:
            valid = ", ".join(s.value for s in FINAL_STATUSES)
            raise CommandError(f"{exc}; valid: {valid}") from exc
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        app = get_app()
        app_id = options.get("app_id") or app.app_id
        alias = str(ConfigDjango(config_values=app.config_values).django_db_alias)
        check_migrated_for_command(alias)
        cutoff = now_utc() - options["older_than"]
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"pynenc_purge: app {app_id}, everything finished before {cutoff:%Y-%m-%d %H:%M:%S %Z}"
        )

        def progress(table: str, count: int) -> None:
            self.stdout.write(f"  {table}: {count:,} {verb} so far")

        try:
            report = purge(
                app_id,
                alias,
                cutoff=cutoff,
                statuses=statuses,
                batch_size=options["batch_size"],
                dry_run=options["dry_run"],
                progress=progress,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for table, count in report.deleted.items():
            self.stdout.write(f"  {table}: {count:,} {verb}")
        self.stdout.write(f"pynenc_purge: {report.total:,} rows {verb}")
