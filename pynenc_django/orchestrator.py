"""Orchestrator on the Django ORM: invocation status, ownership, blocking edges, runner
heartbeats and the cluster-wide atomic-service gate.

Every status change is one conditional UPDATE whose WHERE clause is pynenc's state machine
(or, when that cannot decide, a read-validate-write under a row lock), so two processes
can never both move the same invocation from the same status, on any database and any
isolation level. The statements that run for every invocation (claims, transitions,
status reads) are fixed SQL rather than ORM queries built anew each time: see
``tests/backends/test_statement_budget.py`` for what one invocation costs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from pynenc import context
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.exceptions import InvocationStatusError
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import (
    InvocationStatus,
    InvocationStatusRecord,
    get_status_definition,
    status_record_transition,
)
from pynenc.orchestrator.atomic_service import (
    ActiveRunnerInfo,
    AtomicServiceExecution,
    AtomicServiceExecutionStatus,
)
from pynenc.orchestrator.base_orchestrator import BaseBlockingControl, BaseOrchestrator

from pynenc_django.broker import DjangoBroker
from pynenc_django.conf import ConfigOrchestratorDjango
from pynenc_django.db import (
    NO_FLUSH_CONDITION,
    DjangoBackendMixin,
    ensure_django,
    get_connection,
    insert_rows,
    one_statement,
    raw_delete,
    retry_transient,
)
from pynenc_django.utils import (
    IN_CHUNK,
    BoundedCache,
    chunked,
    from_db_time,
    now_utc,
    sha256_hex,
)
from pynenc_django.wakeup import (
    FINAL_SIGNAL,
    existing_result_waiter,
    signal_after_commit,
    signal_path,
)

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.identifiers.call_id import CallId
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.orchestrator.atomic_service import AtomicServiceRun
    from pynenc.runner.runner_context import RunnerContext
    from pynenc.task import Task, TaskId

    from pynenc_django.models import AtomicServiceExecution as ExecutionRow

RUNNING = AtomicServiceExecutionStatus.RUNNING
BLOCKED = AtomicServiceExecutionStatus.BLOCKED
ABANDONED = AtomicServiceExecutionStatus.ABANDONED
OWNED_STATUSES = (InvocationStatus.PENDING, InvocationStatus.RUNNING, InvocationStatus.PAUSED)
FINAL_CACHE_SIZE = 50_000
_FINAL = sorted(s.value for s in InvocationStatus.get_final_statuses())
_AVAILABLE = sorted(s.value for s in InvocationStatus.get_available_for_run_statuses())
#: ``_claim_from_queue``: the one-statement claim could not decide; take the general path.
_SLOW_CLAIM = object()


@cache
def _transition_plan(
    target: InvocationStatus, has_runner: bool
) -> tuple[tuple[str, ...], tuple[str, ...], bool] | None:
    """pynenc's state machine for ``target`` as a WHERE clause, or ``None`` if it can't be.

    Returns ``(statuses anyone may leave, statuses only their owner may leave, whether
    the new owner is the caller)``: an UPDATE matching either set is exactly a transition
    :func:`status_record_transition` allows. ``None`` when the outcome depends on more
    than the row (pynenc would raise, or the owner would be carried over unknown); the
    caller then reads, validates and writes the slow way, and pynenc raises its errors.
    """
    definition = get_status_definition(target)
    if definition.acquires_ownership and not has_runner:
        return None
    sources = [
        s for s in InvocationStatus if target in get_status_definition(s).allowed_transitions
    ]
    if definition.overrides_ownership:
        free, owned = sources, []
    else:
        free = [s for s in sources if not get_status_definition(s).requires_ownership]
        owned = [s for s in sources if get_status_definition(s).requires_ownership]
    if definition.releases_ownership:
        caller_owns = False
    elif definition.acquires_ownership or not free:
        caller_owns = True  # acquired, or kept from a source the caller had to own
    else:
        return None
    return tuple(s.value for s in free), tuple(s.value for s in owned), caller_owns


#: A claim's transition (never ``None``: the claimer is a runner).
_PENDING_PLAN: tuple[tuple[str, ...], tuple[str, ...], bool] = _transition_plan(  # type: ignore[assignment]
    InvocationStatus.PENDING, True
)


def mysql_history_triggers(alias: str) -> bool:
    """Whether migration 0004 could install its triggers on this MariaDB/MySQL schema."""
    import importlib

    names = importlib.import_module(
        "pynenc_django.migrations.0004_mysql_status_history_triggers"
    ).MYSQL_TRIGGERS
    with get_connection(alias).cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS "
            f"WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME IN ({', '.join(['%s'] * len(names))})",
            list(names),
        )
        return int(cursor.fetchone()[0]) == len(names)


class DjangoBlockingControl(BaseBlockingControl):
    """Waiter → waited edges, so a runner can run what others are blocked on first."""

    def __init__(self, orchestrator: DjangoOrchestrator) -> None:
        self.orchestrator = orchestrator
        self.app = orchestrator.app

    @property
    def db_alias(self) -> str:
        return self.orchestrator.db_alias

    @property
    def transient_retries(self) -> int:
        return self.orchestrator.transient_retries

    @retry_transient
    def waiting_for_results(
        self, caller_invocation_id: InvocationId, result_invocation_ids: list[InvocationId]
    ) -> None:
        from pynenc_django.models import BlockingEdge

        now = now_utc()
        BlockingEdge.objects.using(self.db_alias).bulk_create(
            [
                BlockingEdge(
                    app_id=self.app.app_id,
                    waiter_id=caller_invocation_id,
                    waited_id=waited_id,
                    created_at=now,
                )
                for waited_id in dict.fromkeys(result_invocation_ids)
            ],
            ignore_conflicts=True,
        )

    @retry_transient
    def release_waiters(self, waited_invocation_id: str) -> None:
        from pynenc_django.models import BlockingEdge

        raw_delete(
            BlockingEdge.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(waited_id=waited_invocation_id)
        )

    @cached_property
    def _blocking_sql(self) -> str:
        from pynenc_django.models import BlockingEdge, Invocation

        edges = self.orchestrator._table(BlockingEdge)
        invocations = self.orchestrator._table(Invocation)
        available = ", ".join(["%s"] * len(_AVAILABLE))
        return (
            f"SELECT e.waited_id FROM {edges} e WHERE e.app_id = %s"
            f" AND EXISTS (SELECT 1 FROM {invocations} i WHERE i.app_id = %s"
            f" AND i.invocation_id = e.waited_id AND i.status IN ({available}))"
            f" AND NOT EXISTS (SELECT 1 FROM {edges} w WHERE w.app_id = %s"
            " AND w.waiter_id = e.waited_id)"
            " GROUP BY e.waited_id ORDER BY MIN(e.created_at), e.waited_id LIMIT %s"
        )

    @retry_transient
    def get_blocking_invocations(self, max_num_invocations: int) -> Iterator[InvocationId]:
        """Waited invocations that wait for nothing themselves and can run, oldest first.

        Runs before every claim, so it is fixed SQL (see ``DjangoBackendMixin._fetch``).
        """
        app_id = self.app.app_id
        rows = self.orchestrator._fetch(
            self._blocking_sql, [app_id, app_id, *_AVAILABLE, app_id, max_num_invocations]
        )
        return iter([InvocationId(row[0]) for row in rows])


class DjangoOrchestrator(DjangoBackendMixin, BaseOrchestrator):
    """pynenc orchestrator backed by the project's database through the Django ORM."""

    #: How long ``filter_final`` trusts the announcements alone (see there).
    FULL_LOOK_SEC = 1.0

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)
        ensure_django()
        self._blocking_control = DjangoBlockingControl(self)
        # Final statuses never change: once seen, a waiting client need not read them again.
        self._final_records: BoundedCache[str, InvocationStatusRecord] = BoundedCache(
            FINAL_CACHE_SIZE
        )
        self._local = threading.local()  # filter_final's last full look, per thread

    @cached_property
    def conf(self) -> ConfigOrchestratorDjango:
        return ConfigOrchestratorDjango(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )

    @property
    def blocking_control(self) -> BaseBlockingControl:
        return self._blocking_control

    def _invocations(self) -> Any:
        from pynenc_django.models import Invocation

        return Invocation.objects.using(self.db_alias).for_app(self.app.app_id)

    #: Seconds a claim skips pynenc's look for blocking invocations after one found none;
    #: 0 (pynenc's behaviour) looks every time. Set by the runner's workers
    #: (``django_blocking_check_interval_sec``).
    blocking_check_interval = 0.0
    _no_blocking_until = 0.0

    def get_blocking_invocations_to_run(
        self,
        max_num_invocations: int,
        blocking_invocation_ids: set[InvocationId],
        runner_ctx: RunnerContext,
    ) -> Iterator[InvocationId]:
        if self.blocking_check_interval <= 0:
            yield from super().get_blocking_invocations_to_run(
                max_num_invocations, blocking_invocation_ids, runner_ctx
            )
            return
        now = time.monotonic()
        if now < self._no_blocking_until:
            return
        found = False
        for invocation_id in super().get_blocking_invocations_to_run(
            max_num_invocations, blocking_invocation_ids, runner_ctx
        ):
            found = True
            yield invocation_id
        if not found:
            self._no_blocking_until = now + self.blocking_check_interval

    def waiting_for_results(
        self, caller_invocation_id: InvocationId | None, result_invocation_ids: list[InvocationId]
    ) -> None:
        """pynenc's; for a client (no caller invocation) under our runner, also its first
        wait. pynenc's result loop calls this after a status look found nothing final,
        then looks again before its own first wait: a look that could find nothing new."""
        from pynenc_django.runner import DjangoPersistentProcessRunner

        super().waiting_for_results(caller_invocation_id, result_invocation_ids)
        runner = self.app.runner
        if (
            caller_invocation_id is None
            and result_invocation_ids
            and isinstance(runner, DjangoPersistentProcessRunner)
        ):
            runner.waiting_for_results(None, result_invocation_ids)

    @cached_property
    def history_by_database(self) -> bool:
        """Whether the database itself records each status change in the state history
        and releases waiters on final statuses (triggers of migration 0003, PostgreSQL
        and SQLite; of 0004 on MariaDB/MySQL where the server allowed them), so neither
        costs a statement of its own."""
        if not self.shares_database(self.app.state_backend):
            return False
        if self.vendor == "mysql":
            return self._mysql_history_triggers()
        return self.vendor in ("postgresql", "sqlite")

    @retry_transient  # also moves the query off an event loop (async tasks), as Django wants
    def _mysql_history_triggers(self) -> bool:
        return mysql_history_triggers(self.db_alias)

    def route_call(self, call: Any) -> DistributedInvocation:
        """pynenc's routing of one call; the new invocation is stored by its registration
        (one transaction with its queueing, :meth:`_store_register_and_route`), not also
        as pynenc creates it."""
        from pynenc_django.state_backend import DjangoStateBackend

        backend = self.app.state_backend
        new_every_time = call.task.conf.registration_concurrency == ConcurrencyControlType.DISABLED
        if not (new_every_time and isinstance(backend, DjangoStateBackend)):
            return super().route_call(call)  # may reuse (and update) a stored invocation
        with backend.registration_pending():
            return super().route_call(call)

    def route_calls(self, calls: list[Any]) -> list[DistributedInvocation]:
        """pynenc's batch routing (``task.parallelize``), storing the new invocations in
        one statement rather than one each as pynenc creates them."""
        from pynenc_django.state_backend import DjangoStateBackend

        backend = self.app.state_backend
        if not isinstance(backend, DjangoStateBackend):
            return super().route_calls(calls)
        with backend.registration_pending():
            return super().route_calls(calls)

    def register_new_invocations(self, invocations: list[DistributedInvocation]) -> None:
        """pynenc's registration; the REGISTERED history rows come from the database
        when it records them (:attr:`history_by_database`)."""
        end_pending = getattr(self.app.state_backend, "end_registration_pending", None)
        if end_pending is not None:
            end_pending()  # from here on the invocations are stored, all in one statement
        if not self.history_by_database:
            super().register_new_invocations(invocations)
            return
        runner_ctx = context.get_or_create_runner_context(self.app.app_id)
        self.app.state_backend.store_runner_context(runner_ctx)
        record = self._store_register_and_route(invocations, runner_ctx.runner_id)
        invocation_ids = [invocation.invocation_id for invocation in invocations]
        self.app.trigger.report_tasks_status(invocation_ids, record.status)
        for invocation in invocations:
            self.app.logger.info(
                f"NEW task:{invocation.call.task.task_id.key} "
                f"invocation:{invocation.invocation_id} REGISTERED and ROUTED"
            )

    # ------------------------------------------------------------------ registration

    @retry_transient
    def _store_register_and_route(
        self, invocations: list[DistributedInvocation], runner_id: str
    ) -> InvocationStatusRecord:
        """Store, register and queue new invocations in one transaction (the state
        backend and the broker share this database where :attr:`history_by_database`):
        a caller that dies half-way leaves no REGISTERED invocation that nothing will
        ever run, and a single call costs one commit (one disk flush) instead of three.
        On PostgreSQL the three INSERTs are one statement (:func:`one_statement`), which
        for a single invocation needs no transaction around it."""
        backend = self.app.state_backend
        # One invocation on PostgreSQL: its three INSERTs are one statement, atomic alone.
        alone = len(invocations) == 1 and self.vendor == "postgresql"
        try:
            with (
                self.write_transaction() if self._routes_here and not alone else nullcontext(),
                one_statement(self.db_alias, self._routes_here),
            ):
                backend.upsert_invocations(invocations)
                record = self._register_new_invocations(invocations, runner_id)
                self.route_invocations(invocations)
        except BaseException:
            # Rolled back: the state backend must not believe them stored.
            backend.forget_invocations([i.invocation_id for i in invocations])  # type: ignore[attr-defined]
            raise
        return record

    @cached_property
    def _routes_here(self) -> bool:
        return self.shares_database(self.app.broker)

    @retry_transient
    def _register_new_invocations(
        self, invocations: list[DistributedInvocation], runner_id: str | None = None
    ) -> InvocationStatusRecord:
        """Insert REGISTERED rows for invocations not seen before (idempotent)."""
        from pynenc_django.models import Invocation

        # REGISTERED releases ownership, so no owner is stored whoever registers it.
        record = InvocationStatusRecord(InvocationStatus.REGISTERED, None)
        insert_rows(
            self.db_alias,
            Invocation,
            [
                Invocation(
                    app_id=self.app.app_id,
                    invocation_id=invocation.invocation_id,
                    task_id_key=invocation.task.task_id.key,
                    call_id_key=invocation.call.call_id.key,
                    status=record.status.value,
                    status_runner_id=None,
                    status_timestamp=record.timestamp,
                    registered_at=record.timestamp,
                    status_context_id=runner_id,
                    registered_by_inv_id=invocation.parent_invocation_id,
                )
                for invocation in invocations
            ],
            unique_fields=["app_id", "invocation_id"],
            prepare=self.prepares,
        )
        return record

    @retry_transient
    def index_arguments_for_concurrency_control(self, invocation: DistributedInvocation) -> None:
        from pynenc_django.models import InvocationArgument

        rows = [
            InvocationArgument(
                app_id=self.app.app_id,
                invocation_id=invocation.invocation_id,
                arg_key=key,
                value_hash=sha256_hex(value),
                arg_value=value,
            )
            for key, value in invocation.call.serialized_arguments.items()
        ]
        if rows:
            InvocationArgument.objects.using(self.db_alias).bulk_create(rows, ignore_conflicts=True)

    # ------------------------------------------------------------------ queries

    @retry_transient
    def get_existing_invocations(
        self,
        task: Task,
        key_serialized_arguments: dict[str, str] | None = None,
        statuses: list[InvocationStatus] | None = None,
    ) -> Iterator[InvocationId]:
        from django.db.models import Exists, OuterRef

        from pynenc_django.models import InvocationArgument

        qs = self._invocations().filter(task_id_key=task.task_id.key)
        if statuses:
            qs = qs.filter(status__in=[s.value for s in statuses])
        args = InvocationArgument.objects.using(self.db_alias).filter(
            app_id=self.app.app_id, invocation_id=OuterRef("invocation_id")
        )
        for key, value in (key_serialized_arguments or {}).items():
            qs = qs.filter(
                Exists(args.filter(arg_key=key, value_hash=sha256_hex(value), arg_value=value))
            )
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    @retry_transient
    def get_task_invocation_ids(self, task_id: TaskId) -> Iterator[InvocationId]:
        qs = self._invocations().filter(task_id_key=task_id.key)
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    def _filtered(self, task_id: TaskId | None, statuses: list[InvocationStatus] | None) -> Any:
        qs = self._invocations()
        if task_id:
            qs = qs.filter(task_id_key=task_id.key)
        if statuses:
            qs = qs.filter(status__in=[s.value for s in statuses])
        return qs

    @retry_transient
    def get_invocation_ids_paginated(
        self,
        task_id: TaskId | None = None,
        statuses: list[InvocationStatus] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[InvocationId]:
        """Newest registration first; ordered by an immutable column so pages never shift."""
        qs = self._filtered(task_id, statuses).order_by("-registered_at", "-id")
        return [
            InvocationId(i)
            for i in qs.values_list("invocation_id", flat=True)[offset : offset + limit]
        ]

    @retry_transient
    def count_invocations(
        self, task_id: TaskId | None = None, statuses: list[InvocationStatus] | None = None
    ) -> int:
        return self._filtered(task_id, statuses).count()

    @retry_transient
    def get_call_invocation_ids(self, call_id: CallId) -> Iterator[InvocationId]:
        qs = self._invocations().filter(call_id_key=call_id.key)
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    @cached_property
    def _status_sql(self) -> str:
        from pynenc_django.models import Invocation

        return (
            f"SELECT i.status, i.status_runner_id, i.status_timestamp{self._result_column} "
            f"FROM {self._table(Invocation)} i{self._result_join} "
            "WHERE i.app_id = %s AND i.invocation_id = %s"
        )

    @cached_property
    def _fetches_results(self) -> bool:
        """Whether status reads also fetch a SUCCESS invocation's (small) result, for the
        ``get_result`` a waiting client makes next: our state backend, same database."""
        return self.shares_database(self.app.state_backend)

    @cached_property
    def _result_column(self) -> str:
        return ", r.result" if self._fetches_results else ""

    @cached_property
    def _result_join(self) -> str:
        """The LEFT JOIN of :attr:`_result_column`: results of at most
        ``PREFETCH_RESULT_BYTES``, so a status look never drags a large one along."""
        if not self._fetches_results:
            return ""
        from pynenc_django.models import InvocationResult
        from pynenc_django.state_backend import PREFETCH_RESULT_BYTES

        size = {  # in bytes everywhere (SQLite's length() counts characters)
            "postgresql": "octet_length(r.result)",
            "mysql": "LENGTH(r.result)",
        }.get(self.vendor, "length(CAST(r.result AS BLOB))")
        return (
            f" LEFT JOIN {self._table(InvocationResult)} r ON r.app_id = i.app_id "
            "AND r.invocation_id = i.invocation_id "
            f"AND i.status = '{InvocationStatus.SUCCESS.value}' AND {size} <= {PREFETCH_RESULT_BYTES}"
        )

    def _keep_result(self, invocation_id: str, row: Sequence[Any]) -> None:
        """Hand a result fetched by :attr:`_result_join` to the state backend."""
        if len(row) > 3 and row[3] is not None:
            self.app.state_backend.remember_result(invocation_id, row[3])  # type: ignore[attr-defined]

    def get_invocation_status_record(self, invocation_id: str) -> InvocationStatusRecord:
        """Every status look of every waiting client: fixed SQL, and none for a status
        this process has seen final."""
        return self._final_records.get(invocation_id) or self._read_status_record(invocation_id)

    @retry_transient
    def _read_status_record(self, invocation_id: str) -> InvocationStatusRecord:
        rows = self._fetch(self._status_sql, [self.app.app_id, invocation_id])
        if not rows:
            raise KeyError(f"Invocation ID {invocation_id} not found")
        status, runner_id, timestamp = rows[0][:3]
        record = InvocationStatusRecord(
            InvocationStatus(status), runner_id, from_db_time(timestamp)
        )
        if record.status.is_final():
            self._final_records.put(invocation_id, record)
            self._keep_result(invocation_id, rows[0])
        return record

    def filter_final(self, invocation_ids: list[InvocationId]) -> list[InvocationId]:
        """Which are final (a group's results loop asks this between waits): the ones this
        process has seen final, and one query per chunk for the rest, remembering them.

        On PostgreSQL, once a query has covered these ids while this process was
        subscribed to the final-status announcements, only announced ids can have become
        final since: the next looks query just those (a 2,000-invocation group is then not
        re-read every 20 ms), with a full look every ``FULL_LOOK_SEC`` all the same.
        """
        unknown = [i for i in dict.fromkeys(invocation_ids) if self._final_records.get(i) is None]
        waiter = existing_result_waiter(self.db_alias)
        if waiter is not None and waiter.listening and unknown:
            now, covered = time.monotonic(), getattr(self._local, "covered", None)
            if (
                covered is not None
                and covered[0] == waiter.epoch
                and now - covered[1] < self.FULL_LOOK_SEC
                and covered[2].issuperset(unknown)
            ):
                unknown = [i for i in unknown if waiter.announced(i)]
            else:
                self._local.covered = (waiter.epoch, now, frozenset(unknown))
        for chunk in chunked(unknown):
            self._remember_final(chunk)
        return [i for i in invocation_ids if self._final_records.get(i) is not None]

    @retry_transient
    def _remember_final(self, invocation_ids: Sequence[str]) -> None:
        from pynenc_django.models import Invocation

        sql = (
            "SELECT i.status, i.status_runner_id, i.status_timestamp"
            f"{self._result_column}, i.invocation_id "
            f"FROM {self._table(Invocation)} i{self._result_join} WHERE i.app_id = %s "
            f"AND i.invocation_id IN ({', '.join(['%s'] * len(invocation_ids))}) "
            f"AND i.status IN ({', '.join(['%s'] * len(_FINAL))})"
        )
        for row in self._fetch(
            sql,
            [self.app.app_id, *invocation_ids, *_FINAL],
            prepare=False,  # shape varies
        ):
            invocation_id, (status, runner_id, timestamp) = row[-1], row[:3]
            record = InvocationStatusRecord(
                InvocationStatus(status), runner_id, from_db_time(timestamp)
            )
            self._final_records.put(invocation_id, record)
            self._keep_result(invocation_id, row[:-1])

    @retry_transient
    def filter_by_status(
        self, invocation_ids: list[InvocationId], status_filter: frozenset[InvocationStatus]
    ) -> list[InvocationId]:
        if not invocation_ids or not status_filter:
            return []
        statuses = [s.value for s in status_filter]
        found: set[str] = set()
        for chunk in chunked(list(dict.fromkeys(invocation_ids))):
            found.update(
                self._invocations()
                .filter(invocation_id__in=chunk, status__in=statuses)
                .values_list("invocation_id", flat=True)
            )
        return [i for i in invocation_ids if i in found]

    # ------------------------------------------------------------------ claiming work

    def get_additional_invocations_to_run(
        self,
        missing_invocations: int,
        blocking_invocation_ids: set[InvocationId],
        invocations_to_reroute: set[InvocationId],
        runner_ctx: RunnerContext,
        queue_provider: Callable[[], Sequence[str]],
        on_queue_retrieved: Callable[[str], None],
    ) -> Iterator[DistributedInvocation]:
        """pynenc's claim loop, with the broker pop and the PENDING transition committed
        together, so a worker killed between the two can never lose the invocation.

        Needs the broker on the same database alias; otherwise pynenc's own two-step
        loop runs unchanged.
        """
        if not self._routes_here:
            yield from super().get_additional_invocations_to_run(
                missing_invocations,
                blocking_invocation_ids,
                invocations_to_reroute,
                runner_ctx,
                queue_provider,
                on_queue_retrieved,
            )
            return
        while missing_invocations > 0:
            queues = queue_provider()
            for queue_name in queues:
                claim = self._claim_from_queue(queue_name, blocking_invocation_ids, runner_ctx)
                if claim is None:
                    continue  # queue empty
                on_queue_retrieved(queue_name)
                invocation, reroute = claim
                if reroute is not None:
                    invocations_to_reroute.add(reroute)
                if invocation is not None:
                    missing_invocations -= 1
                    self.claimed_the_last_message = len(queues) == 1 and self._queue_look == 1
                    yield invocation
                break
            else:
                return  # every queue was empty

    #: The last claim took the only message its (single) queue held, as the claim
    #: statement or the broker's look before it saw the queue; reset by the worker.
    claimed_the_last_message = False
    #: Set by the worker before a claim: its waiter was just woken for new work.
    work_announced = False
    #: How many messages (0, 1, 2 or more; 0: unknown) the last claim saw in its queue.
    _queue_look = 0

    @retry_transient
    def _claim_from_queue(
        self,
        queue_name: str,
        blocking_invocation_ids: set[InvocationId],
        runner_ctx: RunnerContext,
    ) -> tuple[DistributedInvocation | None, InvocationId | None] | None:
        """Pop one message and decide its fate in one transaction.

        Returns ``None`` when the queue is empty, else ``(invocation to run or None,
        invocation id to reroute or None)``. A message whose invocation cannot run (it is
        already claimed, final, or held back by concurrency control) is consumed, as in
        pynenc's own loop.
        """
        if self._claims_in_one_statement:
            claim = self._claim_in_one_statement(queue_name, blocking_invocation_ids, runner_ctx)
            if claim is not _SLOW_CLAIM:
                return claim  # type: ignore[return-value]
        broker: DjangoBroker = self.app.broker  # type: ignore[assignment]
        self._queue_look = 0  # unknown
        # An idle worker looks before it takes the write lock, unless it was just woken
        # for new work and the pop tells the queue's length itself.
        if broker.pop_takes_locks and not (self.work_announced and broker.pop_looks):
            if not broker.has_invocations(queue_name):
                return None
            self._queue_look = broker.last_look
        with self.write_transaction():
            invocation_id = broker.retrieve_invocation(queue_name)
            if broker.pop_looks:
                self._queue_look = broker.last_look
            if invocation_id is None:
                return None
            if invocation_id in blocking_invocation_ids:
                return None, None
            invocation = self.app.state_backend.get_invocation(invocation_id)
            cc_enabled = invocation.task.conf.running_concurrency != ConcurrencyControlType.DISABLED
            if cc_enabled and not self.get_invocation_status(invocation_id).is_available_for_run():
                return None, None
            if not self.is_candidate_to_run_by_concurrency_control(invocation):
                if invocation.task.conf.reroute_on_concurrency_control:
                    self.set_invocation_status(
                        invocation_id, InvocationStatus.CONCURRENCY_CONTROLLED, runner_ctx
                    )
                    return None, invocation_id
                self.set_invocation_status(
                    invocation_id, InvocationStatus.CONCURRENCY_CONTROLLED_FINAL, runner_ctx
                )
                return None, None
            try:
                self.set_invocation_status(invocation_id, InvocationStatus.PENDING, runner_ctx)
            except InvocationStatusError as ex:
                # Already claimed, running or final: the message was stale. Only the
                # available-for-run statuses may become PENDING, so this check is pynenc's.
                self.app.logger.debug(f"Skipping invocation:{invocation_id}: {ex}")
                return None, None
            return invocation, None

    @cached_property
    def _claims_in_one_statement(self) -> bool:
        """PostgreSQL, with the broker and the state backend here and the history written
        by the database: the usual claim is one statement (:meth:`_claim_in_one_statement`)."""
        return self.vendor == "postgresql" and self._routes_here and self.history_by_database

    def _claim_in_one_statement(
        self,
        queue_name: str,
        blocking_invocation_ids: set[InvocationId],
        runner_ctx: RunnerContext,
    ) -> tuple[DistributedInvocation, None] | None | object:
        """Pop the head of the queue and make its invocation PENDING in one autocommit
        statement (:attr:`_claim_sql`): one round trip instead of BEGIN, pop, UPDATE and
        COMMIT. Only for the usual case, decided by the database: a task known here to
        run without concurrency control, an invocation free to become PENDING and not one
        this worker runs as a blocking one. Otherwise nothing changes and the caller
        takes the general path (``_SLOW_CLAIM``). ``None``: the queue is empty."""
        task_keys = self._cc_free_task_keys()
        if not task_keys:
            return _SLOW_CLAIM
        self.app.state_backend.store_runner_context(runner_ctx)  # the history names it
        runner_id = runner_ctx.runner_id
        running = self.claims_run_at_once
        free, owned, _ = _PENDING_PLAN
        app_id = self.app.app_id
        status = InvocationStatus.RUNNING if running else InvocationStatus.PENDING
        params: list[Any] = [app_id, queue_name, status.value, runner_id]
        params += [self._db_time(now_utc()), runner_id, app_id]
        params += [task_keys, sorted(blocking_invocation_ids), *free, *owned]
        if owned:
            params.append(runner_id)
        if running:
            params += [InvocationStatus.PENDING.value, runner_id, runner_id]
        rows = self._fetch(self._claim_sql(running), [*params, app_id, queue_name, app_id])
        if not rows:
            return None
        invocation_id, claimed, queued, *state_row = rows[0]
        if not claimed:
            return _SLOW_CLAIM
        self._queue_look = int(queued)  # the statement's snapshot still holds its head
        if state_row[0] is not None:
            self.app.state_backend.remember_invocation_row(state_row)  # type: ignore[attr-defined]
        invocation_id = InvocationId(invocation_id)
        if running:
            self._running_claims[invocation_id] = runner_id
        self._report_status(invocation_id, InvocationStatus.PENDING)
        invocation = self.app.state_backend.get_invocation(invocation_id)
        return invocation, None  # type: ignore[return-value]

    def _cc_free_task_keys(self) -> list[str]:
        """Keys of this process's known tasks that run without concurrency control."""
        tasks = self.app.tasks
        if len(tasks) != self._cc_free_known:
            self._cc_free = sorted(
                task_id.key
                for task_id, task in list(tasks.items())
                if task.conf.running_concurrency == ConcurrencyControlType.DISABLED
            )
            self._cc_free_known = len(tasks)
        return self._cc_free

    _cc_free: list[str] = []
    _cc_free_known = -1

    #: Set by a caller that runs what it claims at once, in this process (our worker
    #: loop): the one-statement claim then also makes the invocation RUNNING, and
    #: pynenc's RUNNING write that follows costs no statement (:meth:`set_invocation_status`).
    claims_run_at_once = False

    @cached_property
    def _running_claims(self) -> dict[InvocationId, str]:
        """Invocations claimed straight into RUNNING, by runner id, until they run."""
        return {}

    @cache  # noqa: B019 (two shapes per orchestrator, which lives as long as its app)
    def _claim_sql(self, running: bool) -> str:
        """The head (skipping heads other workers hold), PENDING for its invocation where
        allowed, and the DELETE only if that happened: the transition is the proof of
        ownership, and a message the fast path may not take stays queued. Returns the
        head's invocation id, whether it was claimed, the queue's length up to 2 (before
        the claim), and the invocation's state backend row.

        ``running``: the row goes on to RUNNING, 1 µs after PENDING; the trigger records
        RUNNING and the statement itself the PENDING it passed through."""
        from pynenc_django.models import (
            BrokerMessage,
            Invocation,
            InvocationHistory,
            StateInvocation,
        )
        from pynenc_django.state_backend import INVOCATION_FIELDS

        free, owned, _ = _PENDING_PLAN
        messages = self._table(BrokerMessage)
        no_flush = NO_FLUSH_CONDITION if self.commits_claims_async else ""
        columns = ", ".join(f"s.{field}" for field in INVOCATION_FIELDS)
        # The time is taken before the statement finds the message: never before the
        # status it replaces, so the history stays in order.
        status_at = "GREATEST(%s::timestamptz, status_timestamp + interval '1 microsecond')"
        passed_pending = ""
        if running:
            status_at += " + interval '1 microsecond'"
            pending_at = "status_timestamp - interval '1 microsecond'"
            passed_pending = (
                f"passed AS (INSERT INTO {self._table(InvocationHistory)} (app_id, "
                "invocation_id, timestamp, status, status_runner_id, status_timestamp, "
                f"runner_context_id) SELECT app_id, invocation_id, {pending_at}, %s, %s, "
                f"{pending_at}, %s FROM pend ON CONFLICT DO NOTHING), "
            )
        return (
            f"WITH head AS (SELECT id, invocation_id FROM {messages} "
            f"WHERE app_id = %s AND queue = %s{no_flush} "
            "ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED), "
            f"pend AS (UPDATE {self._table(Invocation)} SET status = %s, status_runner_id = %s, "
            f"status_timestamp = {status_at}, "
            "status_context_id = %s "
            "WHERE app_id = %s AND invocation_id = (SELECT invocation_id FROM head) "
            "AND task_id_key = ANY(%s::text[]) AND invocation_id <> ALL(%s::text[]) "
            f"AND {self._allowed_sql(len(free), len(owned), False)} "
            "RETURNING app_id, invocation_id, status_timestamp), "
            f"{passed_pending}"
            f"popped AS (DELETE FROM {messages} WHERE id = (SELECT id FROM head) "
            "AND EXISTS (SELECT 1 FROM pend) RETURNING 1) "
            f"SELECT h.invocation_id, EXISTS (SELECT 1 FROM popped), "
            f"(SELECT count(*) FROM (SELECT 1 FROM {messages} WHERE app_id = %s AND queue = %s "
            f"LIMIT 2) AS q), {columns} FROM head h "
            f"LEFT JOIN {self._table(StateInvocation)} s "
            "ON s.app_id = %s AND s.invocation_id = h.invocation_id"
        )

    @retry_transient
    def get_owned_invocation_ids(
        self, runner_ids: Sequence[str], statuses: Iterable[InvocationStatus] = OWNED_STATUSES
    ) -> list[InvocationId]:
        """Invocations a runner holds (PENDING, RUNNING or PAUSED by default).

        A runner parent uses this to reroute the work of a child it saw die at once,
        instead of waiting for the child's heartbeat to age into pynenc's recovery.
        """
        qs = self._invocations().filter(
            status_runner_id__in=list(runner_ids), status__in=[s.value for s in statuses]
        )
        return [InvocationId(i) for i in qs.values_list("invocation_id", flat=True)]

    # ------------------------------------------------------------------ status

    def set_invocation_status(
        self, invocation_id: InvocationId, status: InvocationStatus, runner_ctx: RunnerContext
    ) -> None:
        """pynenc's steps (:meth:`record_status_change`, then the trigger report). RUNNING
        by the runner that claimed straight into it (:attr:`claims_run_at_once`) is
        already written."""
        claimed_by = self._running_claims.pop(invocation_id, None) if self._running_claims else None
        if status != InvocationStatus.RUNNING or claimed_by != runner_ctx.runner_id:
            self.record_status_change(invocation_id, status, runner_ctx)
        self._report_status(invocation_id, status)

    def _report_status(self, invocation_id: InvocationId, status: InvocationStatus) -> None:
        """What pynenc does after writing a status: the trigger report, the log line."""
        self.app.trigger.report_tasks_status([invocation_id], status)
        self.app.logger.info(f"invocation:{invocation_id} status:{status.value}")

    def set_invocation_result(
        self, invocation: DistributedInvocation, result: Any, runner_ctx: RunnerContext
    ) -> None:
        """pynenc's (store the result, then SUCCESS, then the trigger reports); on
        PostgreSQL the result and the status are written by one statement."""
        if not (self.history_by_database and self.vendor == "postgresql"):
            super().set_invocation_result(invocation, result, runner_ctx)
            return
        invocation_id = invocation.invocation_id
        serialized = self.app.client_data_store.serialize(result)
        self.record_status_change(invocation_id, InvocationStatus.SUCCESS, runner_ctx, serialized)
        self._report_status(invocation_id, InvocationStatus.SUCCESS)
        self.app.trigger.report_invocation_result(invocation, result)

    def record_status_change(
        self,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_ctx: RunnerContext,
        result: str | None = None,
    ) -> InvocationStatusRecord:
        """Every write of a status change, without pynenc's trigger report (the admin's
        entry point): the transition, with a final status's purge time in the same
        UPDATE; its history and, on final statuses, the waiters' release, done by the
        database where it can (:attr:`history_by_database`)."""
        # The history row names this context: stored first, once per process.
        self.app.state_backend.store_runner_context(runner_ctx)
        if self.history_by_database:
            record = self._atomic_status_transition(
                invocation_id, status, runner_ctx.runner_id, final=status.is_final(), result=result
            )
        else:
            record = self._change_with_history(invocation_id, status, runner_ctx)
        if status.is_final():
            signal_after_commit(self.db_alias, self._final_signal)
        return record

    @cached_property
    def _final_signal(self) -> str | None:
        """SQLite: the file waiting clients watch for final statuses (:mod:`.wakeup`)."""
        return signal_path(self.db_alias, FINAL_SIGNAL) if self.conf.django_listen_notify else None

    @retry_transient
    def _change_with_history(
        self, invocation_id: InvocationId, status: InvocationStatus, runner_ctx: RunnerContext
    ) -> InvocationStatusRecord:
        """Without the database's triggers: the transition, the waiters' release and the
        history row commit together, so nobody sees a status before its history (inside a
        caller's transaction, such as the claim, with it: no savepoint needed)."""
        with nullcontext() if self.connection.in_atomic_block else self.write_transaction():
            record = self._atomic_status_transition(
                invocation_id, status, runner_ctx.runner_id, final=status.is_final()
            )
            if status.is_final():
                self.release_waiters(invocation_id)
            self.app.state_backend.add_history(invocation_id, record, runner_ctx)
        return record

    @retry_transient
    def _atomic_status_transition(
        self,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_id: str | None = None,
        final: bool = False,
        result: str | None = None,
    ) -> InvocationStatusRecord:
        """Validate with pynenc's state machine and write, as one unit.

        Usually one UPDATE whose WHERE clause is the state machine (:func:`_transition_plan`),
        atomic on every database. When it matches nothing, or the rules need the current
        owner, the row is read and locked (``SELECT ... FOR UPDATE`` on PostgreSQL/MariaDB,
        the write lock on SQLite), validated by pynenc, which raises its own errors, and
        written with an UPDATE that also matches the status it read. Either way a
        concurrent writer can only ever make this call fail, never be silently overwritten.
        ``final`` also stamps ``auto_purge_at``, saving pynenc's separate UPDATE.
        ``status_context_id`` names the changer for the history trigger. ``result`` (a
        serialized result, PostgreSQL only) is stored by the same statement, before the
        status changes, as pynenc's ``set_invocation_result`` stores it.
        """
        if result is not None and self.vendor != "postgresql":
            raise ValueError("storing a result with the transition needs PostgreSQL")
        purge_at = now_utc() if final else None
        extra: dict[str, Any] = {"status_context_id": runner_id}
        if final:
            extra["auto_purge_at"] = purge_at
        plan = _transition_plan(status, runner_id is not None)
        if plan is not None:
            free, owned, caller_owns = plan
            record = InvocationStatusRecord(status, runner_id if caller_owns else None)
            sql = self._transition_sql(
                len(free),
                len(owned),
                runner_id is None,
                final,
                result is not None,
                status == InvocationStatus.RUNNING and self._commits_running_async,
            )
            params: list[Any] = [] if result is None else [self.app.app_id, invocation_id, result]
            params += [
                status.value,
                record.runner_id,
                self._db_time(record.timestamp),
                runner_id,
            ]
            if final:
                params.append(self._db_time(purge_at))  # type: ignore[arg-type]
            params += [self.app.app_id, invocation_id, *free, *owned]
            if owned and runner_id is not None:
                params.append(runner_id)
            if self._execute(sql, params) == 1:
                return record
        elif result is not None:
            self.app.state_backend._set_result(invocation_id, result)
        with self.write_transaction():
            row = (
                self._invocations()
                .select_for_update()
                .filter(invocation_id=invocation_id)
                .values_list("status", "status_runner_id", "status_timestamp")
                .first()
            )
            if row is None:
                raise KeyError(f"Invocation ID {invocation_id} not found")
            current = InvocationStatusRecord(InvocationStatus(row[0]), row[1], row[2])
            new_record = status_record_transition(current, status, runner_id)
            updated = (
                self._invocations()
                .filter(invocation_id=invocation_id, status=row[0], status_timestamp=row[2])
                .update(
                    status=new_record.status.value,
                    status_runner_id=new_record.runner_id,
                    status_timestamp=new_record.timestamp,
                    **extra,
                )
            )
            if updated != 1:  # pragma: no cover - only reachable without row locks
                raise RuntimeError(f"Concurrent status change on invocation {invocation_id}")
        return new_record

    @property
    def _commits_running_async(self) -> bool:
        """Whether RUNNING commits without waiting for the WAL flush
        (``django_async_claim_commits``; the SUCCESS or failure that follows flushes it
        anyway). Only in a statement of its own: in a caller's transaction the setting
        would apply to the caller's commit."""
        return self.commits_claims_async and not self.connection.in_atomic_block

    @cache  # noqa: B019 (a handful of shapes per orchestrator, which lives as long as its app)
    def _transition_sql(
        self,
        free: int,
        owned: int,
        no_owner: bool,
        final: bool,
        with_result: bool,
        async_commit: bool = False,
    ) -> str:
        """The UPDATE of :meth:`_atomic_status_transition`'s fast path, for one shape.
        ``async_commit``: its own transaction commits without waiting for the WAL flush
        (see :attr:`_commits_running_async`)."""
        from pynenc_django.models import Invocation, InvocationResult

        purge = ", auto_purge_at = %s" if final else ""
        # A data-modifying CTE runs whatever the UPDATE matches, like pynenc's set_result.
        store = (
            f"WITH stored AS (INSERT INTO {self._table(InvocationResult)} "
            "(app_id, invocation_id, result) VALUES (%s, %s, %s) "
            "ON CONFLICT (app_id, invocation_id) DO UPDATE SET result = EXCLUDED.result) "
            if with_result
            else ""
        )
        no_flush = NO_FLUSH_CONDITION if async_commit else ""
        return (
            f"{store}UPDATE {self._table(Invocation)} SET status = %s, status_runner_id = %s, "
            f"status_timestamp = %s, status_context_id = %s{purge} "
            f"WHERE app_id = %s AND invocation_id = %s AND {self._allowed_sql(free, owned, no_owner)}"
            f"{no_flush}"
        )

    def _allowed_sql(self, free: int, owned: int, no_owner: bool) -> str:
        """The state machine's part of a transition's WHERE clause (its parameters: the
        ``free`` statuses, the ``owned`` ones, then the owner unless ``no_owner``)."""
        # On PostgreSQL the state machine's columns are compared as expressions, which no
        # index can serve: the row is then always found through the unique key. Without
        # statistics (autovacuum off, a young table) the planner may otherwise walk an
        # (app_id, status_runner_id, status) or (app_id, status, ...) index, every dead
        # version of every PENDING row included, and the cost grows with the table.
        status, runner = (
            ("status || ''", "status_runner_id || ''")
            if self.vendor == "postgresql"
            else ("status", "status_runner_id")
        )
        allowed = []
        if free:
            allowed.append(f"{status} IN ({', '.join(['%s'] * free)})")
        if owned:
            owner = "status_runner_id IS NULL" if no_owner else f"{runner} = %s"
            allowed.append(f"({status} IN ({', '.join(['%s'] * owned)}) AND {owner})")
        return f"({' OR '.join(allowed) or '1 = 0'})"

    @retry_transient
    def increment_invocation_retries(self, invocation_id: str) -> None:
        from django.db.models import F

        self._invocations().filter(invocation_id=invocation_id).update(
            retry_count=F("retry_count") + 1
        )

    @retry_transient
    def get_invocation_retries(self, invocation_id: str) -> int:
        value = (
            self._invocations()
            .filter(invocation_id=invocation_id)
            .values_list("retry_count", flat=True)
            .first()
        )
        return int(value or 0)

    # ------------------------------------------------------------------ retention

    @retry_transient
    def set_up_invocation_auto_purge(self, invocation_id: str) -> None:
        self._invocations().filter(invocation_id=invocation_id).update(auto_purge_at=now_utc())

    @retry_transient
    def auto_purge(self) -> None:
        """Delete final invocations older than ``auto_final_invocation_purge_hours``."""
        from pynenc_django.models import BlockingEdge, InvocationArgument

        cutoff = now_utc() - timedelta(hours=float(self.conf.auto_final_invocation_purge_hours))
        app_id = self.app.app_id
        while True:
            ids = list(
                self._invocations()
                .filter(auto_purge_at__lte=cutoff)
                .values_list("invocation_id", flat=True)[:IN_CHUNK]
            )
            if not ids:
                return
            with self.write_transaction():
                edges = BlockingEdge.objects.using(self.db_alias).for_app(app_id)
                edges.filter(waited_id__in=ids).delete()
                edges.filter(waiter_id__in=ids).delete()
                InvocationArgument.objects.using(self.db_alias).for_app(app_id).filter(
                    invocation_id__in=ids
                ).delete()
                self._invocations().filter(invocation_id__in=ids).delete()

    @retry_transient
    def purge(self) -> None:
        """Delete every orchestrator row of this app (testing and resets only)."""
        from pynenc_django import models

        self._final_records.clear()
        with self.write_transaction():
            for model in (
                models.Invocation,
                models.InvocationArgument,
                models.BlockingEdge,
                models.RunnerHeartbeat,
                models.AtomicServiceExecution,
            ):
                model.objects.using(self.db_alias).for_app(self.app.app_id).delete()
            models.AtomicServiceGate.objects.using(self.db_alias).filter(
                app_id=self.app.app_id
            ).delete()

    # ------------------------------------------------------------------ runners

    @retry_transient
    def register_runner_heartbeats(
        self,
        runner_ids: list[str],
        can_run_atomic_service: bool = False,
        consumed_queues: Sequence[str] | None = None,
    ) -> None:
        """Upsert heartbeats. ``created_at`` is set once: slot order depends on it."""
        from pynenc_django.models import RunnerHeartbeat

        if not runner_ids:
            return
        now = now_utc()
        queues = list(consumed_queues or ())
        manager = RunnerHeartbeat.objects.using(self.db_alias)
        unique_ids = list(dict.fromkeys(runner_ids))
        with self.write_transaction():
            manager.bulk_create(
                [
                    RunnerHeartbeat(
                        app_id=self.app.app_id,
                        runner_id=runner_id,
                        created_at=now,
                        last_heartbeat=now,
                        can_run_atomic_service=can_run_atomic_service,
                        consumed_queues=queues,
                    )
                    for runner_id in unique_ids
                ],
                ignore_conflicts=True,
            )
            manager.for_app(self.app.app_id).filter(runner_id__in=unique_ids).update(
                last_heartbeat=now,
                can_run_atomic_service=can_run_atomic_service,
                consumed_queues=queues,
            )

    @retry_transient
    def forget_runners(self, runner_ids: Sequence[str]) -> None:
        """Drop the heartbeats of runners that stopped cleanly.

        Otherwise they would count as atomic-service members, holding time slots nobody
        uses, until ``runner_considered_dead_after_minutes`` passes.
        """
        from pynenc_django.models import RunnerHeartbeat

        for chunk in chunked(list(runner_ids)):
            RunnerHeartbeat.objects.using(self.db_alias).for_app(self.app.app_id).filter(
                runner_id__in=chunk
            ).delete()

    @retry_transient
    def _get_active_runners(
        self, timeout_seconds: float, can_run_atomic_service: bool | None = None
    ) -> list[ActiveRunnerInfo]:
        from pynenc_django.models import RunnerHeartbeat

        qs = (
            RunnerHeartbeat.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(last_heartbeat__gte=now_utc() - timedelta(seconds=timeout_seconds))
        )
        if can_run_atomic_service is not None:
            qs = qs.filter(can_run_atomic_service=can_run_atomic_service)
        return [
            ActiveRunnerInfo(
                runner_id=row.runner_id,
                creation_time=row.created_at,
                last_heartbeat=row.last_heartbeat,
                allow_to_run_atomic_service=row.can_run_atomic_service,
                consumed_queues=tuple(row.consumed_queues or ()),
            )
            for row in qs.order_by("created_at", "runner_id")
        ]

    # ------------------------------------------------------------------ recovery

    @retry_transient
    def get_pending_invocations_for_recovery(self) -> Iterator[InvocationId]:
        cutoff = now_utc() - timedelta(seconds=float(self.app.conf.max_pending_seconds))
        qs = self._invocations().filter(
            status=InvocationStatus.PENDING.value, status_timestamp__lte=cutoff
        )
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    @retry_transient
    def _get_running_invocations_for_recovery(
        self, timeout_seconds: float
    ) -> Iterator[InvocationId]:
        """RUNNING invocations whose *owner* has no heartbeat, or a stale one."""
        from django.db.models import Exists, OuterRef

        from pynenc_django.models import RunnerHeartbeat

        alive = RunnerHeartbeat.objects.using(self.db_alias).filter(
            app_id=self.app.app_id,
            runner_id=OuterRef("status_runner_id"),
            last_heartbeat__gte=now_utc() - timedelta(seconds=timeout_seconds),
        )
        qs = (
            self._invocations()
            .filter(status=InvocationStatus.RUNNING.value, status_runner_id__isnull=False)
            .exclude(Exists(alive))
        )
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    # ------------------------------------------------------------------ atomic services

    def _executions(self) -> Any:
        from pynenc_django.models import AtomicServiceExecution as Row

        return Row.objects.using(self.db_alias).for_app(self.app.app_id)

    def _gate(self) -> Any:
        from pynenc_django.models import AtomicServiceGate

        return AtomicServiceGate.objects.using(self.db_alias).filter(app_id=self.app.app_id)

    def _ensure_gate(self) -> None:
        from pynenc_django.models import AtomicServiceGate

        AtomicServiceGate.objects.using(self.db_alias).bulk_create(
            [AtomicServiceGate(app_id=self.app.app_id)], ignore_conflicts=True
        )

    def _stale_holder_reason(self, run_id: str, runner_id: str | None, since: datetime) -> str:
        """Why the RUNNING holder of the gate must be considered dead, or ``""``.

        A holder is dead when its runner's heartbeat is older than
        ``runner_considered_dead_after_minutes`` (or it has none and the run started
        longer ago than that). Runners refresh their heartbeat before every claim, so a
        live holder is never reaped.
        """
        from pynenc_django.models import RunnerHeartbeat

        dead_after = timedelta(minutes=float(self.app.conf.runner_considered_dead_after_minutes))
        cutoff = now_utc() - dead_after
        last = (
            RunnerHeartbeat.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(runner_id=runner_id)
            .values_list("last_heartbeat", flat=True)
            .first()
        )
        if last is not None:
            if last < cutoff:
                return f"reaped: runner {runner_id} last heartbeat {last.isoformat()} is older than {dead_after}"
            return ""
        if since < cutoff:
            return f"reaped: runner {runner_id} has no heartbeat and run {run_id} started {since.isoformat()}"
        return ""

    def _reap_stale_holder(self, claimer_runner_id: str, now: datetime) -> None:
        """Finalize a RUNNING execution left by a dead runner as ABANDONED and free the gate.

        A runner claims one run at a time, so a holder that is the claimer itself is a run
        whose finalization was lost (say, the database went away at that moment): it is
        over, and must not keep its own runner out forever.
        """
        gate = self._gate().values_list("running_run_id", "runner_id", "started_at").first()
        if not gate or gate[0] is None:
            return
        run_id, runner_id, started_at = gate
        if runner_id == claimer_runner_id:
            reason = f"superseded: runner {runner_id} claimed again, run {run_id} never finalized"
        else:
            reason = self._stale_holder_reason(run_id, runner_id, started_at or now_utc())
        if not reason:
            return
        if (
            self._gate()
            .filter(running_run_id=run_id)
            .update(running_run_id=None, runner_id=None, started_at=None)
        ):
            self._executions().filter(run_id=run_id, status=RUNNING.value).update(
                # Ends exactly when the claim that reaped it starts: windows never overlap.
                status=ABANDONED.value,
                end_time=now,
                reason=reason,
            )

    @retry_transient
    def record_atomic_service_execution_start(
        self,
        atomic_service_run: AtomicServiceRun,
        started_at: datetime | None,
        status: AtomicServiceExecutionStatus = RUNNING,
        reason: str = "",
    ) -> bool:
        """The cluster-wide gate: at most one RUNNING execution per app, on every database.

        The slot is claimed by a compare-and-set on the app's gate row; losers get a
        zero-width BLOCKED row naming the holder. A holder whose runner is dead is first
        finalized as ABANDONED so one crash never jams triggers and recovery for good.
        """
        ident = atomic_service_run.atomic_service_id
        stamp = started_at or now_utc()
        atomic_service_run.started_at = stamp
        if status != RUNNING:
            self._upsert_execution(
                ident.runner_id, ident.atomic_service_run_id, stamp, status, reason
            )
            self.purge_atomic_service_executions()
            return status != BLOCKED
        self._ensure_gate()
        with self.write_transaction():
            self._reap_stale_holder(ident.runner_id, stamp)
            claimed = (
                self._gate()
                .filter(running_run_id__isnull=True)
                .update(
                    running_run_id=ident.atomic_service_run_id,
                    runner_id=ident.runner_id,
                    started_at=stamp,
                )
            )
            if claimed:
                self._upsert_execution(
                    ident.runner_id, ident.atomic_service_run_id, stamp, RUNNING, reason
                )
                return True
            holder = self._gate().values_list("running_run_id", "runner_id").first()
            holder_run, holder_runner = holder or (None, None)
            if holder_run == ident.atomic_service_run_id:
                return True  # idempotent re-record of the run that holds the slot
            self._upsert_execution(
                ident.runner_id,
                ident.atomic_service_run_id,
                stamp,
                BLOCKED,
                reason or f"prior_running:{holder_run} runner:{holder_runner}",
            )
        self.purge_atomic_service_executions()
        return False

    def _upsert_execution(
        self,
        runner_id: str,
        run_id: str,
        start: datetime,
        status: AtomicServiceExecutionStatus,
        reason: str,
    ) -> None:
        end = start if status == BLOCKED else None
        values = {
            "runner_id": runner_id,
            "status": status.value,
            "reason": reason,
            "start_time": start,
            "end_time": end,
        }
        if not self._executions().filter(run_id=run_id).update(**values):
            from pynenc_django.models import AtomicServiceExecution as Row

            Row.objects.using(self.db_alias).create(app_id=self.app.app_id, run_id=run_id, **values)

    @retry_transient
    def finalize_atomic_service_execution(
        self,
        atomic_service_run: AtomicServiceRun,
        end_time: datetime,
        status: AtomicServiceExecutionStatus,
        reason: str = "",
    ) -> None:
        """First terminal write wins; a run with no row at all still gets one (start=end)."""
        from pynenc_django.models import AtomicServiceExecution as Row

        ident = atomic_service_run.atomic_service_id
        run_id = ident.atomic_service_run_id
        with self.write_transaction():
            values: dict[str, Any] = {"status": status.value, "end_time": end_time}
            if reason:
                values["reason"] = reason
            updated = (
                self._executions().filter(run_id=run_id, status=RUNNING.value).update(**values)
            )
            self._gate().filter(running_run_id=run_id).update(
                running_run_id=None, runner_id=None, started_at=None
            )
            if not updated and not self._executions().filter(run_id=run_id).exists():
                Row.objects.using(self.db_alias).create(
                    app_id=self.app.app_id,
                    run_id=run_id,
                    runner_id=ident.runner_id,
                    status=status.value,
                    reason=reason,
                    start_time=end_time,
                    end_time=end_time,
                )
        self.purge_atomic_service_executions()

    @staticmethod
    def _to_execution(row: ExecutionRow) -> AtomicServiceExecution:
        return AtomicServiceExecution.from_raw(
            runner_id=row.runner_id,
            atomic_service_run_id=row.run_id,
            start_time=row.start_time,
            end_time=row.end_time,
            status=AtomicServiceExecutionStatus(row.status),
            reason=row.reason,
        )

    @retry_transient
    def get_active_atomic_service_executions(self) -> list[AtomicServiceExecution]:
        rows = self._executions().filter(status=RUNNING.value).order_by("-start_time")
        return [self._to_execution(row) for row in rows]

    @retry_transient
    def get_atomic_service_executions_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        limit: int = 1000,
        *,
        runner_id: str | None = None,
        min_duration_seconds: float = 0.0,
    ) -> list[AtomicServiceExecution]:
        """Windows overlapping [start, end]; an open (RUNNING) one overlaps if it started inside."""
        from django.db.models import Q

        qs = self._executions().filter(
            Q(end_time__gte=start_time) | Q(end_time__isnull=True, start_time__gte=start_time),
            start_time__lte=end_time,
        )
        if runner_id is not None:
            qs = qs.filter(runner_id=runner_id)
        if min_duration_seconds > 0.0:
            qs = qs.filter(end_time__isnull=False)
        rows = qs.order_by("-start_time", "-id")
        if min_duration_seconds <= 0.0:
            return [self._to_execution(row) for row in rows[: max(limit, 0)]]
        # Duration arithmetic differs per vendor; filter in Python over the window.
        result = []
        for row in rows.iterator():
            if (row.end_time - row.start_time).total_seconds() >= min_duration_seconds:
                result.append(self._to_execution(row))
                if len(result) >= limit:
                    break
        return result

    @retry_transient
    def purge_atomic_service_executions(self) -> int:
        """Trim history by age and count; never RUNNING rows, never runs a trigger run cites."""
        retention = float(self.app.conf.atomic_service_execution_retention_minutes)
        max_records = int(self.app.conf.atomic_service_execution_max_records)
        protected = set(self.app.trigger.get_referenced_atomic_service_run_ids())
        finished = self._executions().exclude(status=RUNNING.value)
        removed = 0
        if retention > 0:
            cutoff = now_utc() - timedelta(minutes=retention)
            removed += self._delete_runs(
                finished.filter(end_time__lt=cutoff).values_list("run_id", flat=True), protected
            )
        if max_records > 0:
            excess = finished.count() - max_records
            if excess > 0:
                oldest = finished.order_by("start_time", "id").values_list("run_id", flat=True)
                candidates = [r for r in oldest[: excess + len(protected)] if r not in protected]
                removed += self._delete_runs(candidates[:excess], protected)
        return removed

    def _delete_runs(self, run_ids: Iterable[str], protected: set[str]) -> int:
        doomed = [r for r in run_ids if r not in protected]
        removed = 0
        for chunk in chunked(doomed):
            removed += (
                self._executions()
                .filter(run_id__in=chunk)
                .exclude(status=RUNNING.value)
                .delete()[0]
            )
        return removed
