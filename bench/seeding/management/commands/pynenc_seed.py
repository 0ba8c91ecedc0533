"""``manage.py pynenc_seed``: realistic pynenc rows in bulk, to measure the admin at scale.

Writes invocations with their status history, arguments, results, exceptions, parents
and children, blocking edges, queued broker messages, runners with contexts and
heartbeats, atomic-service executions (BLOCKED and ABANDONED ones with reasons) and
trigger rows, for one ``app_id``. Rows are generated in batches and written with
``COPY`` on PostgreSQL (about a minute per million invocations) and ``bulk_create``
elsewhere. Nothing here runs pynenc: it is data for measuring, not a simulation.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, transaction

TASKS = {
    # task key: (queue, weight)
    "seed.tasks.send_email": ("fast", 30),
    "seed.tasks.resize_image": ("default", 20),
    "seed.tasks.charge_card": ("payments", 10),
    "seed.tasks.sync_inventory": ("default", 15),
    "seed.tasks.build_report": ("slow", 5),
    "seed.tasks.fan_out": ("default", 5),
    "seed.tasks.cleanup": ("slow", 10),
    "seed.tasks.notify": ("fast", 5),
}
QUEUES = ["default", "fast", "slow", "payments"]
# status: (share per thousand, history path)
STATUSES = {
    "success": (800, ["registered", "pending", "running", "success"]),
    "failed": (50, ["registered", "pending", "running", "failed"]),
    "registered": (50, ["registered"]),
    "rerouted": (15, ["registered", "pending", "killed", "rerouted"]),
    "retry": (15, ["registered", "pending", "running", "retry"]),
    "running": (20, ["registered", "pending", "running"]),
    "pending": (15, ["registered", "pending"]),
    "killed": (5, ["registered", "pending", "running", "killed"]),
    "concurrency_controlled": (10, ["registered", "concurrency_controlled"]),
    "concurrency_controlled_final": (15, ["registered", "concurrency_controlled_final"]),
    "paused": (5, ["registered", "pending", "running", "paused"]),
}
OWNED = {"pending", "running", "paused"}
QUEUED = {"registered", "rerouted", "retry"}
RUNNERS = 4
WORKERS = 3


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


class Command(BaseCommand):
    help = "Seed realistic pynenc rows (invocations with history, runners, executions)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--app-id", default="pynenc-seed", help="default: %(default)r")
        parser.add_argument(
            "--count", type=_positive, default=1000, help="invocations, default: %(default)r"
        )
        parser.add_argument("--database", default="default", help="default: %(default)r")
        parser.add_argument(
            "--batch-size", type=_positive, default=20_000, help="default: %(default)r"
        )
        parser.add_argument("--seed", type=int, default=1, help="random seed, default: %(default)r")
        parser.add_argument("--reset", action="store_true", help="delete the app's rows first")

    def handle(
        self,
        *,
        app_id: str,
        count: int,
        database: str,
        batch_size: int,
        seed: int,
        reset: bool,
        verbosity: int = 1,
        **options: Any,
    ) -> None:
        from pynenc_django.models import Invocation

        if database not in connections:
            raise CommandError(f"Unknown database {database!r}: it is not in DATABASES.")
        if reset:
            purge_app(app_id, database)
        elif Invocation.objects.using(database).filter(app_id=app_id).exists():
            raise CommandError(
                f"App {app_id!r} already has invocations in {database!r}; "
                "pass --reset to replace them or choose another --app-id."
            )
        started = time.monotonic()
        seeder = Seeder(app_id, count, database, batch_size, random.Random(seed))
        seeder.run(progress=self.stdout.write if verbosity > 1 else None)
        if connections[database].vendor == "postgresql":
            with connections[database].cursor() as cursor:
                for model in seeder.written:
                    cursor.execute(f"ANALYZE {model._meta.db_table}")
        self.stdout.write(
            f"Seeded {count:,} invocations of app {app_id!r} in {database!r} "
            f"({seeder.rows:,} rows) in {time.monotonic() - started:.1f} s."
        )


def purge_app(app_id: str, database: str) -> None:
    """Delete every pynenc row of ``app_id`` (all tables)."""
    from django.apps import apps

    for model in apps.get_app_config("pynenc_django").get_models():
        if any(f.name == "app_id" for f in model._meta.fields):
            model._default_manager.using(database).filter(app_id=app_id).delete()


class Seeder:
    """Generates rows in ``registered_at`` order, one batch of invocations at a time."""

    def __init__(
        self, app_id: str, count: int, database: str, batch_size: int, rng: random.Random
    ) -> None:
        self.app_id, self.count, self.database = app_id, count, database
        self.batch_size, self.rng = batch_size, rng
        self.now = datetime.now(UTC)
        # Registrations spread over 30 days, or fewer for small seeds.
        self.span = timedelta(days=30) if count >= 10_000 else timedelta(hours=12)
        self.rows = 0
        self.written: set[Any] = set()
        self.runner_ids = [f"seed-runner-{r}" for r in range(RUNNERS)]
        self.worker_ids = [
            f"seed-runner-{r}-worker-{w}" for r in range(RUNNERS) for w in range(WORKERS)
        ]
        weights = [w for _, w in TASKS.values()]
        self.task_keys = self.rng.choices(list(TASKS), weights, k=4096)
        statuses = [s for s, (share, _) in STATUSES.items() for _ in range(share)]
        self.statuses = statuses
        self.vendor = connections[database].vendor

    # ------------------------------------------------------------------ writing

    def write(self, model: Any, rows: list[tuple[Any, ...]], fields: list[str]) -> None:
        if not rows:
            return
        self.rows += len(rows)
        self.written.add(model)
        if self.vendor == "postgresql":
            table = model._meta.db_table
            columns = ", ".join(model._meta.get_field(f).column for f in fields)
            with (
                connections[self.database].cursor() as cursor,
                cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row([json.dumps(v) if isinstance(v, list) else v for v in row])
            return
        objs = [model(**dict(zip(fields, row, strict=True))) for row in rows]
        model.objects.using(self.database).bulk_create(objs, batch_size=1000)

    # ------------------------------------------------------------------ generation

    def run(self, progress: Any = None) -> None:
        with transaction.atomic(using=self.database):
            self.seed_runners()
            self.seed_app_info()
        done = 0
        while done < self.count:
            size = min(self.batch_size, self.count - done)
            with transaction.atomic(using=self.database):
                self.seed_invocations(done, size)
            done += size
            if progress:
                progress(f"{done:,} / {self.count:,} invocations")
        with transaction.atomic(using=self.database):
            self.seed_executions()
            self.seed_triggers()

    def inv_id(self, n: int) -> str:
        return f"{self.app_id[:20]}-inv-{n:09d}"

    def seed_app_info(self) -> None:
        from pynenc_django.models import AppInfoRecord

        config = {
            "app_id": self.app_id,
            "queues": QUEUES,
            "task": {key: {"queue": queue} for key, (queue, _) in TASKS.items()},
        }
        info = {
            "app_id": self.app_id,
            "config_values": config,
            "config_filepath": None,
            "module": "seed.app",
            "module_filepath": None,
            "app_variable": "app",
        }
        self.write(
            AppInfoRecord,
            [(self.app_id, json.dumps(info), self.now)],
            ["app_id", "app_info_json", "updated_at"],
        )

    def seed_runners(self) -> None:
        from pynenc_django.models import RunnerContextRecord, RunnerHeartbeat

        beats: list[tuple[Any, ...]] = []
        contexts: list[tuple[Any, ...]] = [
            (self.app_id, "seed-admin-client", "ExternalRunner", None, 999, "web-1", 1)
        ]
        for r, runner_id in enumerate(self.runner_ids):
            # The last runner is dead: its heartbeat stopped an hour ago.
            last = self.now - (timedelta(hours=1) if r == RUNNERS - 1 else timedelta(seconds=3))
            beats.append(
                (self.app_id, runner_id, self.now - timedelta(days=1), last, r < 2, QUEUES[: r + 1])
            )
            contexts.append(
                (
                    self.app_id,
                    runner_id,
                    "DjangoPersistentProcessRunner",
                    None,
                    1000 + r,
                    f"host-{r}",
                    1,
                )
            )
            for w in range(WORKERS):
                worker = f"{runner_id}-worker-{w}"
                beats.append((self.app_id, worker, self.now - timedelta(days=1), last, False, []))
                contexts.append(
                    (
                        self.app_id,
                        worker,
                        "DjangoPersistentProcessRunner",
                        runner_id,
                        2000 + r * 10 + w,
                        f"host-{r}",
                        1,
                    )
                )
        self.write(
            RunnerHeartbeat,
            beats,
            [
                "app_id",
                "runner_id",
                "created_at",
                "last_heartbeat",
                "can_run_atomic_service",
                "consumed_queues",
            ],
        )
        self.write(
            RunnerContextRecord,
            contexts,
            [
                "app_id",
                "runner_id",
                "runner_cls",
                "parent_runner_id",
                "pid",
                "hostname",
                "thread_id",
            ],
        )

    def seed_invocations(self, start: int, size: int) -> None:
        from pynenc_django import models as m
        from pynenc_django.utils import sha256_hex

        rng, app_id = self.rng, self.app_id
        step = self.span / max(self.count, 1)
        base = self.now - self.span
        invocations, states, histories, results, exceptions = [], [], [], [], []
        messages, delayed, edges, arguments = [], [], [], []
        for n in range(start, start + size):
            iid = self.inv_id(n)
            task = self.task_keys[n % len(self.task_keys)]
            status = self.statuses[rng.randrange(len(self.statuses))]
            if n % 50 == 0 and n + 5 < self.count:
                status = "running"  # a fan-out parent, waiting for its five children
            path = STATUSES[status][1]
            registered = base + step * n
            owner = rng.choice(self.worker_ids) if status in OWNED else None
            times = [
                registered + timedelta(milliseconds=50 * i + rng.randrange(40))
                for i in range(len(path))
            ]
            x, y = rng.randrange(1000), rng.randrange(1000)
            args_id = f"{x:04d}{y:04d}"
            call_id = f"{task}:{args_id}"
            invocations.append(
                (app_id, iid, task, call_id, status, owner, times[-1], 0, None, registered)
            )
            # Every 50th invocation fans out to the next five.
            parent = self.inv_id(n - n % 50) if n % 50 and n % 50 <= 5 else None
            serialized = json.dumps({"x": str(x), "y": json.dumps({"user": f"<u{y}>", "n": y})})
            states.append(
                (
                    app_id,
                    iid,
                    call_id,
                    task,
                    args_id,
                    serialized,
                    parent,
                    None,
                    None,
                    None,
                    None,
                    registered,
                )
            )
            for i, (st, ts) in enumerate(zip(path, times, strict=True)):
                ctx = "seed-admin-client" if i == 0 else rng.choice(self.worker_ids)
                runner = (
                    None
                    if st
                    in (
                        "registered",
                        "rerouted",
                        "retry",
                        "concurrency_controlled",
                        "concurrency_controlled_final",
                        "success",
                        "failed",
                        "killed",
                    )
                    else (owner or ctx)
                )
                histories.append((app_id, iid, ts, st, runner, ts, ctx, parent if i == 0 else None))
            if status == "success":
                results.append((app_id, iid, json.dumps({"ok": True, "total": x + y})))
            elif status == "failed":
                error = json.dumps(
                    {
                        "py/reduce": [
                            {"py/type": "builtins.ValueError"},
                            {"py/tuple": [f"bad input <{x}>"]},
                            {},
                        ]
                    }
                )
                exceptions.append(
                    (
                        app_id,
                        iid,
                        json.dumps(
                            {"error_name": "ValueError", "pynenc_error": False, "error_data": error}
                        ),
                    )
                )
            if status == "registered" and n % 7 == 0:  # a countdown: waits for its time
                due = times[-1] + timedelta(hours=1)
                delayed.append((app_id, TASKS[task][0], 0.0, iid, due, times[-1]))
            elif status in QUEUED:
                messages.append((app_id, TASKS[task][0], 0.0, iid, times[-1]))
            if status == "running" and n % 50 == 0:
                for child in range(1, 6):
                    edges.append((app_id, iid, self.inv_id(n + child), times[-1]))
            if n % 10 == 0:
                arguments.append((app_id, iid, "x", sha256_hex(str(x)), str(x)))
        self.write(
            m.Invocation,
            invocations,
            [
                "app_id",
                "invocation_id",
                "task_id_key",
                "call_id_key",
                "status",
                "status_runner_id",
                "status_timestamp",
                "retry_count",
                "auto_purge_at",
                "registered_at",
            ],
        )
        self.write(
            m.StateInvocation,
            states,
            [
                "app_id",
                "invocation_id",
                "call_id_key",
                "task_id_key",
                "arguments_id",
                "serialized_arguments",
                "parent_invocation_id",
                "parent_event_id",
                "workflow_id",
                "workflow_type_key",
                "parent_workflow_id",
                "registered_at",
            ],
        )
        self.write(
            m.InvocationHistory,
            histories,
            [
                "app_id",
                "invocation_id",
                "timestamp",
                "status",
                "status_runner_id",
                "status_timestamp",
                "runner_context_id",
                "registered_by_inv_id",
            ],
        )
        self.write(m.InvocationResult, results, ["app_id", "invocation_id", "result"])
        self.write(m.InvocationException, exceptions, ["app_id", "invocation_id", "exception"])
        self.write(
            m.BrokerMessage,
            messages,
            ["app_id", "queue", "priority", "invocation_id", "created_at"],
        )
        self.write(
            m.DelayedMessage,
            delayed,
            ["app_id", "queue", "priority", "invocation_id", "due_at", "created_at"],
        )
        self.write(m.BlockingEdge, edges, ["app_id", "waiter_id", "waited_id", "created_at"])
        self.write(
            m.InvocationArgument,
            arguments,
            ["app_id", "invocation_id", "arg_key", "value_hash", "arg_value"],
        )

    def seed_executions(self) -> None:
        """A day of atomic-service runs every 5 minutes: mostly COMPLETED, with BLOCKED
        losers, a few ABANDONED ones, and one RUNNING now."""
        from pynenc_django.models import AtomicServiceExecution, AtomicServiceGate

        rows = []
        start = self.now - timedelta(days=1)
        holders = self.runner_ids[:2]
        for n, at in enumerate(self._every(start, timedelta(minutes=5))):
            holder = holders[n % 2]
            run_id = f"seed-run-{n:06d}"
            if n % 97 == 13:
                rows.append(
                    (
                        self.app_id,
                        run_id,
                        holder,
                        "abandoned",
                        f"reaped: runner {holder} last heartbeat is older than 0:10:00",
                        at,
                        at + timedelta(seconds=40),
                    )
                )
            else:
                rows.append(
                    (self.app_id, run_id, holder, "completed", "", at, at + timedelta(seconds=2))
                )
            loser = holders[(n + 1) % 2]
            rows.append(
                (
                    self.app_id,
                    f"{run_id}-b",
                    loser,
                    "blocked",
                    f"prior_running:{run_id} runner:{holder}",
                    at + timedelta(seconds=1),
                    at + timedelta(seconds=1),
                )
            )
        rows.append(
            (
                self.app_id,
                "seed-run-now",
                holders[0],
                "running",
                "",
                self.now - timedelta(seconds=30),
                None,
            )
        )
        self.write(
            AtomicServiceExecution,
            rows,
            ["app_id", "run_id", "runner_id", "status", "reason", "start_time", "end_time"],
        )
        self.write(
            AtomicServiceGate,
            [(self.app_id, "seed-run-now", holders[0], self.now - timedelta(seconds=30))],
            ["app_id", "running_run_id", "runner_id", "started_at"],
        )

    def _every(self, start: datetime, step: timedelta) -> Iterator[datetime]:
        at = start
        while at < self.now - step:
            yield at
            at += step

    def seed_triggers(self) -> None:
        from pynenc_django import models as m
        from pynenc_django.utils import sha256_hex

        app_id, rows = self.app_id, 100
        conditions, definitions, links, events, event_links, runs, run_conditions = (
            [],
            [],
            [],
            [],
            [],
            [],
            [],
        )
        for t, task in enumerate(list(TASKS)[:3]):
            condition_id = f"event:order.created#{t}"
            key = sha256_hex(condition_id)
            conditions.append(
                (
                    app_id,
                    key,
                    condition_id,
                    "EventContext",
                    json.dumps({"event_code": "order.created"}),
                    None,
                )
            )
            trigger_id = f"seed-trigger-{t}"
            definitions.append((app_id, trigger_id, task, "and", None))
            links.append((app_id, key, condition_id, trigger_id, 0))
        for e in range(min(rows, self.count)):
            event_id = f"seed-event-{e:05d}"
            at = self.now - timedelta(minutes=rows - e)
            invocation_id = self.inv_id(e)
            events.append(
                (
                    app_id,
                    event_id,
                    "order.created",
                    at,
                    json.dumps({"order": e, "note": "<b>x</b>"}),
                    1,
                    1,
                    None,
                    None,
                    None,
                )
            )
            run_id = f"seed-trigger-run-{e:05d}"
            event_links.append((app_id, event_id, invocation_id, run_id, at))
            runs.append(
                (
                    app_id,
                    run_id,
                    "seed-trigger-0",
                    list(TASKS)[0],
                    "and",
                    at,
                    at,
                    invocation_id,
                    None,
                    json.dumps({"trigger_run_id": run_id}),
                )
            )
            run_conditions.append(
                (
                    app_id,
                    run_id,
                    "EventContext",
                    "event:order.created#0",
                    None,
                    None,
                    event_id,
                    None,
                )
            )
        self.write(
            m.TriggerConditionEntry,
            conditions,
            [
                "app_id",
                "condition_key",
                "condition_id",
                "context_type",
                "condition_json",
                "last_cron_execution",
            ],
        )
        self.write(
            m.TriggerDefinitionEntry,
            definitions,
            ["app_id", "trigger_id", "task_id_key", "logic_value", "argument_provider_json"],
        )
        self.write(
            m.TriggerConditionLink,
            links,
            ["app_id", "condition_key", "condition_id", "trigger_id", "position"],
        )
        self.write(
            m.EventEntry,
            events,
            [
                "app_id",
                "event_id",
                "event_code",
                "timestamp",
                "event_json",
                "matched_condition_count",
                "triggered_invocation_count",
                "emitted_by_invocation_id",
                "emitted_by_task_id",
                "emitted_by_runner_context_id",
            ],
        )
        self.write(
            m.EventTriggeredInvocation,
            event_links,
            ["app_id", "event_id", "invocation_id", "trigger_run_id", "linked_at"],
        )
        self.write(
            m.TriggerRunEntry,
            runs,
            [
                "app_id",
                "trigger_run_id",
                "trigger_id",
                "task_id_key",
                "logic_value",
                "claimed_at",
                "executed_at",
                "triggered_invocation_id",
                "atomic_service_run_id",
                "trigger_run_json",
            ],
        )
        self.write(
            m.TriggerRunCondition,
            run_conditions,
            [
                "app_id",
                "trigger_run_id",
                "context_type",
                "condition_id",
                "valid_condition_key",
                "valid_condition_id",
                "event_id",
                "source_invocation_id",
            ],
        )
