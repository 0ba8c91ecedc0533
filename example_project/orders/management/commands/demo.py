"""``manage.py demo``: the shop's workload on two real runners, then what happened.

1. Clears the pynenc state the previous run left (app "shop"); orders are new every run.
2. Places the orders, starts two identical ``manage.py pynenc_runner`` processes (every
   queue, ``--processes`` workers each) and submits ``process_order`` for every order. The
   orders outnumber the workers, so workers whose order waits for its children run them
   inside the wait.
3. Waits, with a progress bar, until every order is completed, every receipt sent (event
   trigger) and the sales report has run (cron trigger).
4. Stalls the runner that holds the atomic services (SIGSTOP, as a GC pause or a frozen
   VM would) until the other runner's claim is refused and recorded as BLOCKED, then lets
   it go on (SIGCONT).
5. Stops the runners with SIGTERM (they must exit 0) and prints the summary.

Exit status 0 only if everything that should have happened did.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, connections, transaction
from django.db.models import Count, Max, Sum
from django.utils import timezone

from orders import tasks
from orders.management.commands.ensure_admin import DEMO_PASSWORD, DEMO_USERNAME
from orders.models import Customer, Order, OrderLine, Payment, Product, SalesReport
from orders.runners import RunnerGroup, RunnerProcess, signals_raise_keyboard_interrupt
from pynenc_django.conf import ConfigDjango, atomic_service_period
from pynenc_django.ops.status import collect_status
from pynenc_django.project import get_app

CUSTOMERS = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Alan Turing", "alan@example.com"),
]
PRODUCTS = [
    ("TEA-01", "Green tea", "4.50"),
    ("MUG-01", "Mug", "8.90"),
    ("KET-01", "Kettle", "39.00"),
    ("HON-01", "Honey", "6.20"),
    ("BIS-01", "Biscuits", "2.80"),
]
RESTOCK = 1000
ORDERS_IN_A_ROW = 4  # consecutive orders of one customer, so that their charges meet
# Two identical runners, each consuming every queue; told apart by their pids.
RUNNERS = ("runner-1", "runner-2")
POLL_SEC = 0.25
QUIET_AFTER_SEC = 3.0  # a live runner refreshes its heartbeat every check (0.3 s)
STALL_ATTEMPTS = 3
DRAIN_SEC = 20.0
FINAL = ("success", "failed", "concurrency_controlled_final")
REFUSALS_SEC = 1.0  # how long the holder stays frozen after the first refusal
CENT = Decimal("0.01")
ADMIN_URL = "http://127.0.0.1:8000/admin/"


class DemoFailed(Exception):
    pass


@dataclass
class Stall:
    runner: str
    run_id: str
    seconds: float


class Progress:
    """A plain-text progress bar: redrawn in place on a terminal; without one (CI logs,
    pipes) a new line at most every 10 % or 5 s."""

    WIDTH = 30

    def __init__(self, out: Any, label: str, total: int) -> None:
        self.out = out
        self.label = label
        self.total = max(total, 1)
        self.tty = out.isatty()
        self.last_line = ""
        self.last_printed = (-1, 0.0)

    def update(self, done: int, detail: str = "", final: bool = False) -> None:
        filled = round(self.WIDTH * min(done, self.total) / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"  {self.label:<10} [{bar}] {done:>3}/{self.total:<3} {detail}".rstrip()
        if self.tty:
            self.out.write("\r" + line.ljust(len(self.last_line)), ending="\n" if final else "")
            self.out.flush()
        else:
            decile, now = 10 * done // self.total, time.monotonic()
            step, at = self.last_printed
            if final or decile != step or now - at >= 5.0:
                self.out.write(line)
                self.out.flush()
                self.last_printed = (decile, now)
        self.last_line = line


class Command(BaseCommand):
    help = (
        "Run the example shop's workload on two pynenc runners (fan-out/fan-in, a retry, "
        "running concurrency, cron and event triggers, the atomic-service gate) and print a "
        "summary. Exits 1 if anything did not happen as it should."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--orders", type=int, default=12, help="Orders to place (12).")
        parser.add_argument(
            "--processes", type=int, default=2, help="Worker processes per runner (2)."
        )
        parser.add_argument(
            "--timeout", type=float, default=180.0, help="Seconds the workload may take (180)."
        )
        parser.add_argument(
            "--no-stall",
            action="store_true",
            help="Skip stalling the atomic-service holder (so no BLOCKED execution is forced).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.app = get_app()
        self.alias = str(ConfigDjango(config_values=self.app.config_values).django_db_alias)
        # pynenc logs every routed invocation at INFO; the runners' logs have them all.
        self.app.logger.setLevel("WARNING")
        if options["orders"] < 1 or options["processes"] < 1:
            self.stderr.write("--orders and --processes must be at least 1")
            sys.exit(2)
        try:
            with signals_raise_keyboard_interrupt():
                problems = self.run(options)
        except KeyboardInterrupt:
            self.stderr.write("\nInterrupted: the runners were stopped.")
            sys.exit(130)
        except DemoFailed as exc:
            self.stderr.write(self.style.ERROR(f"\nDemo failed: {exc}"))
            sys.exit(1)
        if problems:
            self.stderr.write(self.style.ERROR("\nDemo failed:"))
            for problem in problems:
                self.stderr.write(self.style.ERROR(f"  - {problem}"))
            sys.exit(1)
        self.say(self.style.SUCCESS("\nDemo finished: everything happened as it should."))

    # ------------------------------------------------------------------ the run

    def run(self, options: dict[str, Any]) -> list[str]:
        n_orders, processes = options["orders"], options["processes"]
        db = connections[self.alias]
        self.say(
            f"pynenc-django example shop: {n_orders} orders, 2 runners × {processes} worker "
            f"processes, {db.vendor} database {shown(db.settings_dict['NAME'])!r}"
        )
        self.check_migrations()
        self.wait_for_quiet_runners()

        self.step(f"Clearing the pynenc state of app {self.app.app_id!r} left by a previous run")
        self.app.purge()
        self.step("Placing the orders")
        orders = self.place_orders(n_orders)
        self.say(
            f"  orders #{orders[0].pk}..#{orders[-1].pk}: "
            f"{OrderLine.objects.filter(order__in=orders).count()} lines, "
            f"{len({o.customer_id for o in orders})} customers, "
            f"{sum(o.carrier == Order.Carrier.SLOWPOST for o in orders)} shipped by Slowpost"
        )

        log_dir = settings.VAR_DIR / "logs"
        with RunnerGroup(log_dir) as runners:
            self.step(f"Starting 2 runners (logs in {shown(log_dir)}/)")
            for name in RUNNERS:
                process = runners.start(name, "--processes", str(processes))
                self.say(
                    f"  {name:<10} pid {process.pid}: manage.py pynenc_runner "
                    + " ".join(process.args)
                )

            self.step("Submitting process_order for every order")
            started = time.monotonic()
            invocations = self.submit(orders)
            self.step("Waiting for the runners")
            edges = self.wait(orders, runners, options["timeout"], started)
            work_time = time.monotonic() - started

            stall = None
            if not options["no_stall"]:
                self.step("Stalling the runner that holds the atomic services (SIGSTOP)")
                stall = self.stall_the_holder(runners)

            self.step("Stopping the runners (SIGTERM) once nothing is left to run")
            self.drain()
            args = {p.name: " ".join(p.args) for p in runners.processes}
            # Runners drop their heartbeats when they stop cleanly: name them while we can.
            self.runner_names = {
                runner_id: process.name
                for runner_id, process in self.runner_processes(runners).items()
            }
            codes = runners.stop()
            for name, code in codes.items():
                self.say(f"  {name:<10} exit code {code}")
        problems = self.summary(
            orders, invocations, edges, codes, args, work_time, stall, len(RUNNERS) * processes
        )
        if stall is None and not options["no_stall"]:
            problems.append("could not stall the atomic-service holder to show a BLOCKED claim")
        return problems

    def check_migrations(self) -> None:
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connections[self.alias])
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            raise DemoFailed("the database is not migrated: run `manage.py migrate` first")

    def wait_for_quiet_runners(self) -> None:
        """Refuse to purge under live runners (``make serve`` in another terminal)."""
        from pynenc_django.models import RunnerHeartbeat

        beats = RunnerHeartbeat.objects.using(self.alias).for_app(self.app.app_id)
        deadline = time.monotonic() + 2 * QUIET_AFTER_SEC
        while True:
            last = beats.filter(can_run_atomic_service=True).aggregate(m=Max("last_heartbeat"))
            quiet = timedelta(seconds=QUIET_AFTER_SEC)
            if last["m"] is None or timezone.now() - last["m"] > quiet:
                return
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"pynenc runners of app {self.app.app_id!r} are running on this database "
                    "(is `make serve` running?). Stop them first: the demo starts its own."
                )
            time.sleep(0.5)

    def place_orders(self, count: int) -> list[Order]:
        rng = random.Random(20240605)
        with transaction.atomic(using=self.alias):
            customers = [
                Customer.objects.update_or_create(email=email, defaults={"name": name})[0]
                for name, email in CUSTOMERS
            ]
            products = [
                Product.objects.update_or_create(
                    sku=sku, defaults={"name": name, "price": Decimal(price)}
                )[0]
                for sku, name, price in PRODUCTS
            ]
            Product.objects.filter(pk__in=[p.pk for p in products]).update(stock=RESTOCK)
            orders = []
            for i in range(count):
                order = Order.objects.create(
                    customer=customers[(i // ORDERS_IN_A_ROW) % len(customers)],
                    carrier=Order.Carrier.SLOWPOST if i % 3 == 0 else Order.Carrier.PARCELGO,
                )
                for product in rng.sample(products, rng.randint(2, 5)):
                    OrderLine.objects.create(
                        order=order,
                        product=product,
                        quantity=rng.randint(1, 3),
                        unit_price=product.price,
                    )
                orders.append(order)
        return orders

    def submit(self, orders: list[Order]) -> dict[int, Any]:
        bar = Progress(self.stdout, "submitted", len(orders))
        invocations = {}
        for i, order in enumerate(orders, 1):
            invocation = tasks.process_order(order.pk)
            Order.objects.filter(pk=order.pk).update(invocation_id=invocation.invocation_id)
            invocations[order.pk] = invocation
            bar.update(i, f"process_order({order.pk})", final=i == len(orders))
        return invocations

    def wait(
        self, orders: list[Order], runners: RunnerGroup, timeout: float, started: float
    ) -> set[tuple[str, str]]:
        """Until every order is completed, its receipt sent and a sales report written.

        Returns the blocking edges (waiting parent, awaited child) seen meanwhile: they
        exist only while a parent waits.
        """
        from pynenc_django.models import BlockingEdge, Invocation

        ids = [o.pk for o in orders]
        order_rows = Order.objects.filter(pk__in=ids)
        invocation_rows = Invocation.objects.using(self.alias).for_app(self.app.app_id)
        edge_rows = BlockingEdge.objects.using(self.alias).for_app(self.app.app_id)
        seen_edges: set[tuple[str, str]] = set()
        bar = Progress(self.stdout, "completed", len(ids))
        while True:
            seen_edges.update(edge_rows.values_list("waiter_id", "waited_id"))
            completed = order_rows.filter(status=Order.Status.COMPLETED).count()
            receipts = order_rows.filter(receipt_sent_at__isnull=False).count()
            reports = SalesReport.objects.filter(created_at__gte=orders[0].created_at).count()
            statuses = Counter(invocation_rows.values_list("status", flat=True))
            elapsed = time.monotonic() - started
            done = completed == len(ids) and receipts == len(ids) and reports >= 1
            bar.update(
                completed,
                f"receipts {receipts:>2}  reports {reports}  "
                f"invocations {sum(statuses.values()):>3}  {elapsed:3.0f}s",
                final=done,
            )
            if done:
                return seen_edges
            if statuses.get("failed"):
                failed = invocation_rows.filter(status="failed").values_list(
                    "task_id_key", "invocation_id"
                )
                raise DemoFailed(
                    "invocations failed: "
                    + ", ".join(f"{task} {inv[:8]}" for task, inv in failed)
                    + self.logs(runners)
                )
            if gone := runners.exited():
                raise DemoFailed(
                    ", ".join(f"{p.name} exited with code {p.popen.returncode}" for p in gone)
                    + self.logs(runners)
                )
            if elapsed > timeout:
                raise DemoFailed(
                    f"not done after {timeout:g}s: {completed}/{len(ids)} orders completed, "
                    f"{receipts} receipts, {reports} sales reports; invocations "
                    f"{dict(statuses)}" + self.logs(runners)
                )
            time.sleep(POLL_SEC)

    def stall_the_holder(self, runners: RunnerGroup) -> Stall | None:
        """Freeze the runner while it holds the atomic services, until the other runner's
        claim of its own turn is refused (a BLOCKED execution naming the holder); then let
        it go on. What a GC pause, a frozen VM or a starved CPU does to a real runner."""
        from pynenc_django.models import AtomicServiceExecution, AtomicServiceGate

        gate = AtomicServiceGate.objects.using(self.alias).filter(app_id=self.app.app_id)
        blocked = AtomicServiceExecution.objects.using(self.alias).for_app(self.app.app_id)
        # The other runner's turn is due within one period.
        longest = atomic_service_period(self.app.config_values).total_seconds() + 3
        for _attempt in range(STALL_ATTEMPTS):
            holder = self.catch_holder(runners, gate)
            if holder is None:
                return None
            process, run_id = holder
            frozen_at = time.monotonic()
            try:
                self.say(f"  {process.name} frozen while it holds atomic-service run {run_id[:8]}")
                while time.monotonic() - frozen_at < longest:
                    refused = blocked.filter(status="blocked", reason__contains=run_id)
                    if refused.exists():
                        time.sleep(REFUSALS_SEC)  # the other runner keeps trying meanwhile
                        stall = Stall(process.name, run_id, time.monotonic() - frozen_at)
                        self.say(
                            f"  the other runner's claims were refused (BLOCKED ×"
                            f"{refused.count()}); resuming {process.name} (SIGCONT) "
                            f"after {stall.seconds:.1f}s"
                        )
                        return stall
                    time.sleep(0.1)
            finally:
                os.kill(process.pid, signal.SIGCONT)
            self.say(f"  no claim was refused within {longest:g}s; trying again")
        return None

    def catch_holder(self, runners: RunnerGroup, gate: Any) -> tuple[RunnerProcess, str] | None:
        """SIGSTOP the runner holding the gate, caught in the act: its run still holds the
        gate once it is stopped, and it holds no database lock the other runner needs."""
        by_runner_id = self.runner_processes(runners)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            held = gate.values_list("running_run_id", "runner_id").first()
            if held and held[0] and held[1] not in by_runner_id:
                by_runner_id = self.runner_processes(runners)  # its context came since
            process = by_runner_id.get(held[1]) if held and held[0] else None
            if process is None or not process.running():
                time.sleep(0.005)
                continue
            os.kill(process.pid, signal.SIGSTOP)
            # Lockable first: then no write of the gate is pending (a commit that the
            # runner sent just before it stopped has landed), and the gate shows its state.
            if self.gate_lockable() and gate.filter(running_run_id=held[0]).exists():
                return process, held[0]
            os.kill(process.pid, signal.SIGCONT)  # too late, or mid-transaction
            by_runner_id = self.runner_processes(runners)
        return None

    def runner_processes(self, runners: RunnerGroup) -> dict[str, RunnerProcess]:
        """pynenc runner id -> our process, for the live runners (those with a heartbeat)
        whose context pynenc has stored (when their first worker registered).

        The runners are alike (same queues, same workers): what tells them apart is where
        they run. ``manage.py pynenc_runner`` runs the runner in its own process, so the
        pid (and host) in pynenc's runner context is the one of the process we started.
        """
        from pynenc_django.models import RunnerContextRecord, RunnerHeartbeat

        by_pid = {p.pid: p for p in runners.processes}
        live = (
            RunnerHeartbeat.objects.using(self.alias)
            .for_app(self.app.app_id)
            .filter(can_run_atomic_service=True)
            .values("runner_id")
        )
        rows = (
            RunnerContextRecord.objects.using(self.alias)
            .for_app(self.app.app_id)
            .filter(
                runner_id__in=live,
                parent_runner_id__isnull=True,
                hostname=socket.gethostname(),
                pid__in=list(by_pid),
            )
            .values_list("runner_id", "pid")
        )
        return {runner_id: by_pid[pid] for runner_id, pid in rows}

    def gate_lockable(self) -> bool:
        """Whether a claim could be written now: on SQLite no write lock is held, elsewhere
        the gate row is not locked."""
        from pynenc_django.models import AtomicServiceGate

        conn = connections[self.alias]
        if conn.vendor == "sqlite":
            import sqlite3

            probe = sqlite3.connect(conn.settings_dict["NAME"], timeout=0.05)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                return True
            except sqlite3.OperationalError:
                return False
            finally:
                probe.close()
        try:
            with transaction.atomic(using=self.alias):
                rows = AtomicServiceGate.objects.using(self.alias).filter(app_id=self.app.app_id)
                list(rows.select_for_update(nowait=True))
            return True
        except DatabaseError:
            return False

    def drain(self) -> None:
        """Until no invocation is waiting or running: a cron run (the sales report, or
        pynenc's recovery tasks) may have been triggered at the last moment."""
        from pynenc_django.models import Invocation

        rows = Invocation.objects.using(self.alias).for_app(self.app.app_id)
        deadline = time.monotonic() + DRAIN_SEC
        while rows.exclude(status__in=FINAL).exists() and time.monotonic() < deadline:
            time.sleep(POLL_SEC)

    def logs(self, runners: RunnerGroup) -> str:
        return "".join(f"\n----- last lines of {p.log_path}\n{p.tail()}" for p in runners.processes)

    # ------------------------------------------------------------------ the summary

    def summary(
        self,
        orders: list[Order],
        invocations: dict[int, Any],
        edges: set[tuple[str, str]],
        codes: dict[str, int],
        runner_args: dict[str, str],
        work_time: float,
        stall: Stall | None,
        workers: int,
    ) -> list[str]:
        from pynenc_django.models import (
            AtomicServiceExecution,
            EventEntry,
            Invocation,
            InvocationHistory,
        )

        app_id = self.app.app_id
        problems: list[str] = []
        ids = [o.pk for o in orders]
        invocation_rows = Invocation.objects.using(self.alias).for_app(app_id)
        history = InvocationHistory.objects.using(self.alias).for_app(app_id)
        task_of = dict(invocation_rows.values_list("invocation_id", "task_id_key"))

        self.say("")
        self.say(self.style.MIGRATE_HEADING("Summary"))

        # -- orders
        done = Order.objects.filter(pk__in=ids, status=Order.Status.COMPLETED)
        revenue = done.aggregate(total=Sum("total"))["total"] or Decimal(0)
        self.row(
            "Orders",
            f"{done.count()}/{len(ids)} completed in {work_time:.1f}s, "
            f"revenue {revenue.quantize(CENT)}",
        )
        if done.count() != len(ids):
            problems.append(f"only {done.count()} of {len(ids)} orders were completed")

        # -- fan-out / fan-in
        biggest = (
            Order.objects.filter(pk__in=ids).annotate(n=Count("lines")).order_by("-n", "pk")[0]
        )
        result = invocations[biggest.pk].result  # process_order's return value, via pynenc
        self.row(
            "Fan-out/in",
            f"process_order({biggest.pk}) fanned out {result['lines_reserved']} reserve_stock "
            "children and waited for all of them; its result:",
        )
        self.row(
            "",
            f"  subtotal {result['subtotal']} + shipping {result['shipping']} = "
            f"{result['total']}, paid {result['payment']}",
        )
        waited = Counter(task_name(task_of.get(waited_id, "?")) for _, waited_id in edges)
        self.row(
            "",
            f"blocking edges seen while parents waited: {len(edges)} ("
            + ", ".join(f"on {name} {n}" for name, n in waited.most_common())
            + ")",
        )
        expected = biggest.line_total() + (biggest.shipping or 0)
        if str(expected.quantize(CENT)) != result["total"]:
            problems.append(f"order #{biggest.pk}: total {result['total']}, expected {expected}")
        if not waited.get("reserve_stock"):
            problems.append("no blocking edge of a parent waiting on reserve_stock was seen")

        # -- waits: children run nested in their parent's wait; nothing runs twice
        nested, children = nested_children(self.alias, app_id, tasks.process_order.task_id.key)
        self.row(
            "Waits",
            f"{len(ids)} parents waited on {workers} workers: {sum(nested.values())} of their "
            f"{sum(children.values())} children ran in the parent's own worker, nested in its "
            f"wait (the other {sum(children.values()) - sum(nested.values())} on workers free "
            "at the time)",
        )
        self.row(
            "",
            "  ran nested: "
            + ", ".join(f"{name} {nested[name]}/{n}" for name, n in children.most_common()),
        )
        repeated = extra_runs(history, invocation_rows)
        self.row(
            "",
            "every invocation ran once, plus its retries"
            if not repeated
            else "RAN AGAIN: "
            + ", ".join(
                f"{task_name(task_of.get(i, '?'))} {i[:8]} +{n}" for i, n in repeated.items()
            ),
        )
        if repeated:
            problems.append(
                f"{len(repeated)} invocations ran more often than once plus their retries "
                "(no worker was lost: none should have)"
            )

        # -- retry
        retried = list(
            invocation_rows.filter(
                task_id_key=tasks.quote_shipping.task_id.key, retry_count__gte=1
            ).values_list("invocation_id", flat=True)
        )
        slowpost = Order.objects.filter(pk__in=ids, carrier=Order.Carrier.SLOWPOST)
        self.row(
            "Retry",
            f"quote_shipping raised CarrierTimeout for the {len(retried)} Slowpost orders; "
            "pynenc retried each once (retry_for, max_retries=3), and it succeeded",
        )
        if retried:
            steps = history.filter(invocation_id=retried[0]).order_by("timestamp", "id")
            self.row("", "history of one: " + " > ".join(steps.values_list("status", flat=True)))
        if len(retried) < slowpost.count() or slowpost.filter(quote_requests__lt=2).exists():
            problems.append(
                f"each of the {slowpost.count()} Slowpost orders should have had one retried "
                f"quote; {len(retried)} quote_shipping invocations were retried"
            )

        # -- running concurrency
        charges = list(
            invocation_rows.filter(task_id_key=tasks.charge_payment.task_id.key).values_list(
                "invocation_id", flat=True
            )
        )
        set_aside = history.filter(
            invocation_id__in=charges, status="concurrency_controlled"
        ).count()
        payments = Payment.objects.filter(order_id__in=ids)
        overlaps = payment_overlaps(payments)
        customers = payments.values("customer").distinct().count()
        self.row(
            "Concurrency",
            f"charge_payment: {payments.count()} charges of {customers} "
            f"customer{'s' if customers != 1 else ''}, "
            + ("never two of one customer at once" if not overlaps else f"{overlaps} OVERLAPPED"),
        )
        self.row(
            "",
            f"{set_aside}× a worker picked one up while that customer's charge was running: "
            "set aside (concurrency_controlled) and queued again",
        )
        if overlaps:
            problems.append(f"{overlaps} charges overlapped another charge of the same customer")

        # -- cron
        reports = SalesReport.objects.filter(created_at__gte=orders[0].created_at).order_by("pk")
        self.row(
            "Cron",
            f"sales_report ({settings.SHOP_SALES_REPORT_CRON!r}) ran {reports.count()}×: "
            + ", ".join(
                f"{r.created_at:%H:%M:%S} ({r.orders_completed} completed orders so far, {r.revenue})"
                for r in reports
            ),
        )
        if not reports.exists():
            problems.append("the cron-triggered sales_report never ran")

        # -- events
        emitted = (
            EventEntry.objects.using(self.alias)
            .for_app(app_id)
            .filter(event_code=tasks.ORDER_COMPLETED)
            .count()
        )
        receipt_runs = invocation_rows.filter(task_id_key=tasks.send_receipt.task_id.key).count()
        receipts = Order.objects.filter(pk__in=ids, receipt_sent_at__isnull=False).count()
        self.row(
            "Events",
            f"{tasks.ORDER_COMPLETED!r} emitted {emitted}×, triggering send_receipt "
            f"{receipt_runs}×: {receipts} receipts mailed to {shown(settings.EMAIL_FILE_PATH)}/",
        )
        if receipts != len(ids):
            problems.append(f"{receipts} receipts were sent for {len(ids)} orders")

        # -- invocations
        report = collect_status(
            app_id,
            self.alias,
            dead_after=timedelta(minutes=float(self.app.conf.runner_considered_dead_after_minutes)),
            atomic_interval=atomic_service_period(self.app.config_values),
            worker_runners=False,
            stuck_wait_after=timedelta(
                seconds=float(
                    ConfigDjango(config_values=self.app.config_values).django_stuck_wait_after_sec
                )
            ),
        )
        self.row(
            "Invocations",
            "by status: "
            + ", ".join(f"{status} {n}" for status, n in sorted(report.counts_by_status.items())),
        )
        by_task: dict[str, Counter[str]] = defaultdict(Counter)
        for key, status in invocation_rows.values_list("task_id_key", "status"):
            by_task[task_name(key)][status] += 1
        for name, counts in sorted(by_task.items()):
            self.row("", f"  {name:<40} " + ", ".join(f"{s} {n}" for s, n in counts.items()))
        if report.counts_by_status.get("failed"):
            problems.append(f"{report.counts_by_status['failed']} invocations failed")
        # Only a cron run triggered just before the stop may be left waiting.
        left = Counter(
            task_name(key)
            for key in invocation_rows.exclude(status__in=FINAL).values_list(
                "task_id_key", flat=True
            )
        )
        if left:
            self.row(
                "", "  left queued by the stop: " + ", ".join(f"{t} {n}" for t, n in left.items())
            )
        if set(left) - {"sales_report", *(t for t in left if t.endswith("(pynenc)"))}:
            problems.append(f"invocations left unfinished: {dict(left)}")
        if report.counts_by_status.get("concurrency_controlled_final"):
            problems.append("invocations were dropped by concurrency control")

        # -- atomic services
        names = getattr(self, "runner_names", {})
        executions = AtomicServiceExecution.objects.using(self.alias).for_app(app_id)
        totals = Counter(executions.values_list("status", flat=True))
        self.row(
            "Atomic svc",
            "executions (trigger processing, recovery; one runner at a time): "
            + ", ".join(f"{status} {n}" for status, n in sorted(totals.items())),
        )
        by_runner: dict[str, Counter[str]] = defaultdict(Counter)
        for runner_id, status in executions.values_list("runner_id", "status"):
            by_runner[names.get(runner_id, runner_id[:8])][status] += 1
        for name, counts in sorted(by_runner.items()):
            self.row(
                "", f"  {name:<16} " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
            )
        if stall is not None:
            run = executions.filter(run_id=stall.run_id).first()
            took = f"{(run.end_time - run.start_time).total_seconds():.1f}s" if run else "?"
            self.row(
                "",
                f"{stall.runner} was frozen {stall.seconds:.1f}s holding run {stall.run_id[:8]}, "
                f"which then ended {run.status if run else '?'} after {took}; meanwhile:",
            )
        blocked = list(executions.filter(status="blocked").order_by("start_time", "id"))
        for row in blocked[:5]:
            reason = row.reason
            for runner_id, name in names.items():
                reason = reason.replace(runner_id, f"{name}({runner_id[:8]})")
            self.row(
                "",
                f"  BLOCKED at {row.start_time:%H:%M:%S.%f}"[:-3]
                + f" {names.get(row.runner_id, row.runner_id[:8])}: {reason}",
            )
        if len(blocked) > 5:
            self.row("", f"  ... and {len(blocked) - 5} more BLOCKED")
        if executions.filter(status="running").exists():
            problems.append("an atomic-service execution is still RUNNING after the stop")
        if not totals.get("completed"):
            problems.append("no atomic-service execution completed")
        if overlap := windows_overlap(executions):
            problems.append(f"atomic-service executions overlapped: {overlap}")
        if stall is not None and not any(stall.run_id in row.reason for row in blocked):
            problems.append(f"no BLOCKED execution names the stalled run {stall.run_id}")

        # -- runners
        self.row(
            "Runners",
            ", ".join(f"{name} exit code {code}" for name, code in codes.items())
            + f" (logs in {shown(settings.VAR_DIR / 'logs')}/)",
        )
        for name, code in codes.items():
            if code != 0:
                problems.append(f"{name} ({runner_args.get(name, '')}) exited with code {code}")

        # -- admin
        user = get_user_model().objects.filter(username=DEMO_USERNAME).first()
        login = (
            f"login {DEMO_USERNAME} / {DEMO_PASSWORD}"
            if user is not None and user.check_password(DEMO_PASSWORD)
            else "create a login with `manage.py ensure_admin`"
        )
        self.row("Admin", f"`make serve`, then {ADMIN_URL} ({login})")
        return problems

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def step(self, text: str) -> None:
        self.say(self.style.MIGRATE_LABEL(f"==> {text}"))

    def row(self, label: str, text: str) -> None:
        self.say(f"  {label:<12} {text}")


def shown(path: Any) -> str:
    """A path relative to the current directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def task_name(task_id_key: str) -> str:
    """``orders.tasks.process_order`` -> ``process_order``; pynenc's own tasks say so."""
    module, _, name = task_id_key.rpartition(".")
    return f"{name} (pynenc)" if module.startswith("pynenc.") else name


def nested_children(
    alias: str, app_id: str, parent_task_key: str
) -> tuple[Counter[str], Counter[str]]:
    """The children of the ``parent_task_key`` invocations by task: those that ran in
    their parent's worker (a RUNNING record of the child names the worker of a RUNNING
    record of the parent), and all of them.

    A worker runs one invocation at a time but for those nested in a wait, and a parent
    here waits for every child it creates: a child that ran on its parent's worker ran
    inside the parent's wait.
    """
    from django.db.models import Q

    from pynenc_django.models import InvocationHistory, StateInvocation

    invocations = StateInvocation.objects.using(alias).for_app(app_id)
    parents = invocations.filter(task_id_key=parent_task_key).values("invocation_id")
    of_children = invocations.filter(parent_invocation_id__in=parents)
    children = list(of_children.values_list("invocation_id", "parent_invocation_id", "task_id_key"))
    runs = (
        InvocationHistory.objects.using(alias)
        .for_app(app_id)
        .filter(status="running", status_runner_id__isnull=False)
        .filter(
            Q(invocation_id__in=parents) | Q(invocation_id__in=of_children.values("invocation_id"))
        )
        .values_list("invocation_id", "status_runner_id")
    )
    workers: dict[str, set[str]] = defaultdict(set)  # invocation -> workers that ran it
    for invocation_id, worker in runs:
        workers[invocation_id].add(worker)
    nested: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for child_id, parent_id, task_key in children:
        total[task_name(task_key)] += 1
        if workers[child_id] & workers[parent_id]:
            nested[task_name(task_key)] += 1
    return nested, total


def extra_runs(history: Any, invocation_rows: Any) -> dict[str, int]:
    """Invocations that RAN more often than once plus their retries, by how many more."""
    runs = Counter(history.filter(status="running").values_list("invocation_id", flat=True))
    retries = dict(
        invocation_rows.filter(retry_count__gte=1).values_list("invocation_id", "retry_count")
    )
    return {
        invocation_id: n - 1 - retries.get(invocation_id, 0)
        for invocation_id, n in runs.items()
        if n > 1 + retries.get(invocation_id, 0)
    }


def payment_overlaps(payments: Any) -> int:
    """Pairs of charges of one customer whose [started, finished] intervals overlap."""
    by_customer: dict[int, list[tuple[Any, Any]]] = defaultdict(list)
    for customer_id, start, end in payments.values_list("customer_id", "started_at", "finished_at"):
        by_customer[customer_id].append((start, end))
    return sum(
        1
        for intervals in by_customer.values()
        for (_, end), (start, _) in pairwise(sorted(intervals))
        if start < end
    )


def windows_overlap(executions: Any) -> str:
    """The first two atomic-service executions that ran at the same time, or ``""``."""
    windows = executions.exclude(status="blocked").order_by("start_time", "id")
    rows = list(windows.values_list("run_id", "start_time", "end_time"))
    for (run_a, _, end_a), (run_b, start_b, _) in pairwise(rows):
        if end_a is None or start_b < end_a:
            return f"run {run_a[:8]} (until {end_a}) and run {run_b[:8]} (from {start_b})"
    return ""
