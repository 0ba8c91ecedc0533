"""``manage.py pynenc_runner``: run pynenc workers for this project until stopped."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pynenc_django.conf import ConfigDjango
from pynenc_django.logs import configure_runner_logging
from pynenc_django.project import DEFAULT_RUNNER, apply_overrides, get_app, runnable_runners
from pynenc_django.vendors import vendor_of

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DB_RETRY_MAX_SEC = 30.0


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def describe_database(alias: str) -> str:
    """``postgresql 'shop' on db.internal:5432`` — never the user or password."""
    from django.db import connections

    conn = connections[alias]
    settings = conn.settings_dict
    where = settings.get("HOST") or ("local socket" if vendor_of(conn).is_server else "")
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    place = f" on {where}{port}" if where else ""
    return f"{conn.vendor} {str(settings.get('NAME'))!r}{place} (alias {alias!r})"


def runner_name(value: str) -> str:
    """``--name``: printable, at most as long as the heartbeat's column."""
    from argparse import ArgumentTypeError

    from pynenc_django.models.base import RUNNER_NAME_LENGTH

    name = value.strip()
    if not name or not name.isprintable() or len(name) > RUNNER_NAME_LENGTH:
        raise ArgumentTypeError(
            f"{value!r} is not a runner name: 1 to {RUNNER_NAME_LENGTH} printable characters"
        )
    return name


class Command(BaseCommand):
    help = (
        "Run pynenc workers for this project (DjangoPersistentProcessRunner by default). "
        "SIGTERM or Ctrl-C stops gracefully; a second signal forces."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--processes",
            type=positive_int,
            help="Worker processes (default: PYNENC['num_processes'] or the CPU count).",
        )
        parser.add_argument(
            "--runner",
            help=f"pynenc runner class name (default: PYNENC['runner_cls'] or {DEFAULT_RUNNER}).",
        )
        parser.add_argument(
            "--queues",
            help="Comma-separated queues to consume (default: all of the broker's queues).",
        )
        parser.add_argument("--log-level", choices=LOG_LEVELS, help="pynenc's log level.")
        parser.add_argument(
            "--name",
            type=runner_name,
            help="A name for this runner, shown with its host and pid in the admin "
            "(default: none, the admin shows host and pid).",
        )

    # Checks run in handle(), without database checks: those connect, and a database
    # that is not up yet must get the wait-and-retry below, not a traceback.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        if not options.get("skip_checks"):
            self.check(databases=[])
        app = get_app()
        overrides = self._overrides(app, options)
        if options.get("name"):
            overrides["django_runner_name"] = options["name"]
        apply_overrides(app, overrides)
        configure_runner_logging(app)
        alias = str(ConfigDjango(config_values=app.config_values).django_db_alias)
        self._wait_for_database(alias)
        self._check_migrations(alias)
        runner = app.runner
        self.stdout.write(self._banner(app, runner, alias))
        self.stdout.flush()
        runner.run()
        if getattr(runner, "forced_stop", False):
            self.stderr.write("pynenc runner: forced stop; interrupted invocations were rerouted")
            sys.exit(1)
        self.stdout.write("pynenc runner: stopped")

    def _overrides(self, app: Any, options: dict[str, Any]) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if name := options.get("runner"):
            runners = runnable_runners()
            if name not in runners:
                raise CommandError(
                    f"Unknown runner {name!r}. Available: {', '.join(sorted(runners))}.",
                    returncode=2,
                )
            overrides["runner_cls"] = name
        if processes := options.get("processes"):
            overrides.update(num_processes=processes, max_processes=processes)
            overrides["max_threads"] = processes
        if queues_option := options.get("queues"):
            from pynenc_django.project import declared_queues

            queues = tuple(q.strip() for q in queues_option.split(",") if q.strip())
            # A queue is real when the broker declares it or a registered task routes
            # there (@app.task(queue=...)): a runner dedicated to it must start.
            broker_queues = tuple(app.broker.conf.queues)
            task_queues = tuple(q for q in declared_queues(app) if q not in broker_queues)
            unknown = [q for q in queues if q not in broker_queues + task_queues]
            if not queues or unknown:
                by_tasks = f"; tasks route to: {', '.join(task_queues)}" if task_queues else ""
                raise CommandError(
                    f"Unknown queue(s) {', '.join(map(repr, unknown)) or repr(queues_option)}. "
                    f"The broker declares: {', '.join(broker_queues)} (PYNENC['queues'])"
                    f"{by_tasks}.",
                    returncode=2,
                )
            runner_section = dict((app.config_values or {}).get("runner") or {})
            overrides["runner"] = {**runner_section, "queues": list(queues)}
        if level := options.get("log_level"):
            overrides["logging_level"] = level
        return overrides

    def _wait_for_database(self, alias: str) -> None:
        """Start even when the database comes up later: say so, and retry with backoff."""
        from django.db import OperationalError, connections

        delay = 0.5
        while True:
            try:
                connections[alias].ensure_connection()
                return
            except OperationalError as exc:
                reason = (str(exc).strip().splitlines() or ["no details"])[0]
                self.stderr.write(
                    f"pynenc runner: database {describe_database(alias)} is unreachable "
                    f"({reason}); retrying in {delay:g}s. Ctrl-C to give up."
                )
                time.sleep(delay)
                delay = min(DB_RETRY_MAX_SEC, delay * 2)

    def _check_migrations(self, alias: str) -> None:
        from pynenc_django.db.schema import check_migrated_for_command

        check_migrated_for_command(alias)

    def _banner(self, app: Any, runner: Any, alias: str) -> str:
        conf = runner.conf
        processes = (
            getattr(runner, "num_processes", 0)
            or getattr(conf, "num_processes", 0)
            or getattr(conf, "max_processes", 0)
            or os.cpu_count()
        )
        queues = ", ".join(conf.queues or app.broker.conf.queues)
        return "\n".join(
            [
                "pynenc runner",
                f"  app id     {app.app_id}",
                f"  database   {describe_database(alias)}",
                f"  runner     {type(runner).__name__}",
                f"  name       {getattr(app.orchestrator, 'runner_name', str)() or '-'}",
                f"  processes  {processes}",
                f"  queues     {queues}",
                f"  pid        {os.getpid()}",
            ]
        )
