"""Claiming work: a queued invocation (or one others wait for) popped and made PENDING in one
transaction, under its concurrency key's lock; PostgreSQL's one-statement claim; what a
claim does with an invocation it cannot load; rerouting at the first place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Literal

from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.exceptions import InvocationStatusError
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus

from pynenc_django.broker import DjangoBroker
from pynenc_django.db import (
    is_database_error,
    named_locks,
    retry_transient,
)
from pynenc_django.exceptions import InvocationLoadError, InvocationNotStoredError
from pynenc_django.ops.planner import FirstAnalyze
from pynenc_django.ops.vacuum import QueueVacuum
from pynenc_django.orchestrator.core import OrchestratorCore
from pynenc_django.orchestrator.rules import (
    _AVAILABLE,
    _PENDING_PLAN,
    _SLOW_CLAIM,
    DISABLED,
    OWNED_STATUSES,
    _Slow,
    concurrency_lock_name,
)
from pynenc_django.utils import chunked, now_utc

if TYPE_CHECKING:
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.runner.runner_context import RunnerContext


@dataclass(frozen=True, slots=True)
class ClaimOptions:
    """How one caller claims (:meth:`ClaimMixin.claim`); the defaults are pynenc's own
    behaviour, which ``get_invocations_to_run`` keeps for pynenc's runners.

    Given with each claim, never kept by the orchestrator: one orchestrator serves every
    thread of a process (pynenc's thread runners), each claiming for itself. What must
    last from one of a caller's claims to its next (:attr:`no_blocking_until`) comes back
    in the :class:`ClaimResult`, for the caller to give to its next claim."""

    #: The caller runs what it claims at once, in this process (our worker loop): the
    #: one-statement claim then also makes the invocation RUNNING, and pynenc's RUNNING
    #: write that follows costs no statement (``set_invocation_status``).
    run_at_once: bool = False
    #: The caller's waiter was just woken for new work: a claim whose pop tells the
    #: queue's length itself pops at once, without looking at the queue first.
    work_announced: bool = False
    #: Seconds a claim skips pynenc's look for blocking invocations after one found none;
    #: 0 (pynenc's behaviour) looks every time (``django_blocking_check_interval_sec``).
    blocking_check_interval: float = 0.0
    #: The caller's previous :attr:`ClaimResult.no_blocking_until`.
    no_blocking_until: float = 0.0


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What one claim (:meth:`ClaimMixin.claim`) took, and what its caller needs back."""

    invocations: tuple[DistributedInvocation, ...]
    #: The claim took the only message its (single) queue held, as the claim statement or
    #: the broker's look before it saw the queue: what was enqueued since has been
    #: announced to a caller that waits for announcements.
    claimed_the_last_message: bool = False
    #: ``time.monotonic()`` until which the caller's next claim skips the look for
    #: blocking invocations (:attr:`ClaimOptions.no_blocking_until`).
    no_blocking_until: float = 0.0
    #: Claimed invocations that had expired (ended FAILED, not returned): the queue may
    #: hold more, so the caller claims again before it waits.
    expired: int = 0


@dataclass(slots=True)
class ClaimCall:
    """One call's claim, never shared: its options and what it saw on the way."""

    options: ClaimOptions = ClaimOptions()
    #: How many messages (0, 1, 2 or more; 0: unknown) the last pop saw in its queue.
    queue_look: int = 0
    claimed_the_last_message: bool = False
    no_blocking_until: float = field(init=False)
    expired: int = 0

    def __post_init__(self) -> None:
        self.no_blocking_until = self.options.no_blocking_until

    def result(self, invocations: tuple[DistributedInvocation, ...]) -> ClaimResult:
        return ClaimResult(
            invocations, self.claimed_the_last_message, self.no_blocking_until, self.expired
        )


class ClaimMixin(OrchestratorCore):
    """Part of :class:`~pynenc_django.orchestrator.DjangoOrchestrator`; see the module docstring."""

    def claim(
        self,
        runner_ctx: RunnerContext,
        options: ClaimOptions,
        *,
        max_num_invocations: int = 1,
        queue_provider: Callable[[], Sequence[str]] | None = None,
        on_queue_retrieved: Callable[[str], None] | None = None,
    ) -> ClaimResult:
        """Claim up to ``max_num_invocations`` as :meth:`get_invocations_to_run` does,
        with the caller's ``options``; every invocation is claimed before this returns."""
        call = ClaimCall(options)
        found = self._invocations_to_run(
            max_num_invocations, runner_ctx, call, queue_provider, on_queue_retrieved
        )
        return call.result(tuple(found))

    def get_invocations_to_run(
        self,
        max_num_invocations: int,
        runner_ctx: RunnerContext,
        queue_provider: Callable[[], Sequence[str]] | None = None,
        on_queue_retrieved: Callable[[str], None] | None = None,
    ) -> Iterator[DistributedInvocation]:
        """pynenc's, with the default :class:`ClaimOptions` (pynenc's own runners), which
        also move due delayed messages to their queues here (looking for them at most
        once a second; ``pynenc_runner``'s workers do it themselves, on time)."""
        if self._routes_here and isinstance(self.app.broker, DjangoBroker):
            self._django_broker.due_clock.promote_if_due()
        return self._invocations_to_run(
            max_num_invocations, runner_ctx, ClaimCall(), queue_provider, on_queue_retrieved
        )

    def _invocations_to_run(
        self,
        max_num_invocations: int,
        runner_ctx: RunnerContext,
        call: ClaimCall,
        queue_provider: Callable[[], Sequence[str]] | None,
        on_queue_retrieved: Callable[[str], None] | None,
    ) -> Iterator[DistributedInvocation]:
        """pynenc's ``get_invocations_to_run`` (blocking invocations first, then queued
        ones, then the reroutes), for one :class:`ClaimCall`; a claimed invocation whose
        call expired ends FAILED instead (:meth:`expire_if_due`)."""
        now = now_utc()
        for invocation in self._claimed_in_order(
            max_num_invocations, runner_ctx, call, queue_provider, on_queue_retrieved
        ):
            self._queue_vacuum.claimed()
            self._first_analyze.claimed()
            if self.expire_if_due(invocation, runner_ctx, now):
                call.expired += 1
            else:
                yield invocation

    @cached_property
    def _queue_vacuum(self) -> QueueVacuum:
        """Keeps the queue tables free of the dead rows claims leave (PostgreSQL)."""
        return QueueVacuum(self.db_alias)

    @cached_property
    def _first_analyze(self) -> FirstAnalyze:
        """A new deployment's tables get their first statistics soon after its first
        claims, not only at the runner parent's next look (PostgreSQL)."""
        return FirstAnalyze(self.db_alias)

    def _claimed_in_order(
        self,
        max_num_invocations: int,
        runner_ctx: RunnerContext,
        call: ClaimCall,
        queue_provider: Callable[[], Sequence[str]] | None,
        on_queue_retrieved: Callable[[str], None] | None,
    ) -> Iterator[DistributedInvocation]:
        blocking_invocation_ids: set[InvocationId] = set()
        queue_provider = queue_provider or self.app.runner.queue_names_for_retrieval
        on_queue_retrieved = on_queue_retrieved or self.app.runner.note_queue_retrieved
        for blocking_invocation_id in self.get_blocking_invocations_to_run(
            max_num_invocations, blocking_invocation_ids, runner_ctx, call
        ):
            if invocation := self.app.state_backend.get_invocation(blocking_invocation_id):
                yield invocation
        invocations_to_reroute: set[InvocationId] = set()
        yield from self.get_additional_invocations_to_run(
            max_num_invocations - len(blocking_invocation_ids),
            blocking_invocation_ids,
            invocations_to_reroute,
            runner_ctx,
            queue_provider,
            on_queue_retrieved,
            call,
        )
        self.reroute_invocations(invocations_to_reroute, runner_ctx)

    def get_blocking_invocations_to_run(
        self,
        max_num_invocations: int,
        blocking_invocation_ids: set[InvocationId],
        runner_ctx: RunnerContext,
        call: ClaimCall | None = None,
    ) -> Iterator[InvocationId]:
        """pynenc's: invocations others wait for, claimed first; each claimed as a queued
        one is (:meth:`_take`, so concurrency control holds here too). Skipped until
        ``call``'s ``no_blocking_until`` (:class:`ClaimOptions`)."""
        if call is None:
            call = ClaimCall()
        interval = call.options.blocking_check_interval
        now = time.monotonic()
        if interval > 0 and now < call.options.no_blocking_until:
            return
        found = False
        for invocation_id in self.get_blocking_invocations(max_num_invocations):
            if not self.get_invocation_status(invocation_id).can_transition_to(
                InvocationStatus.PENDING
            ):
                continue  # another worker has it already
            if self._take_blocking(invocation_id, runner_ctx):
                found = True
                blocking_invocation_ids.add(invocation_id)
                yield invocation_id
        if not found and interval > 0:
            call.no_blocking_until = now + interval

    @retry_transient
    def _take_blocking(self, invocation_id: InvocationId, runner_ctx: RunnerContext) -> bool:
        with named_locks(self.db_alias, self.app.app_id) as lock, self.write_transaction():
            return self._take(invocation_id, runner_ctx, lock)[0] is not None

    def claim_awaited(
        self,
        invocation_ids: Sequence[InvocationId],
        runner_ctx: RunnerContext,
        consumes: Callable[[str], bool],
    ) -> DistributedInvocation | None:
        """One of ``invocation_ids``, which an invocation of the caller waits for, that
        still waits for a worker: made PENDING for the caller to run at once, inside its
        wait, so that a waiting worker never blocks on work nobody else would take.

        ``consumes(queue)``: whether the caller's runner takes work from that queue; work
        routed elsewhere is left to its runners. ``None``: none can be taken (running or
        claimed elsewhere, final, held by concurrency control, or on another queue).

        The message stays queued: whoever pops it finds the invocation taken and consumes
        it, as for the blocking invocations pynenc runs first (deleting it here would need
        an index on every message's invocation id, paid by every enqueue and pop).
        """
        available = self._available_among(invocation_ids) if invocation_ids else set()
        for invocation_id in dict.fromkeys(invocation_ids):
            if invocation_id in available and (
                invocation := self._take_awaited(invocation_id, runner_ctx, consumes)
            ):
                return invocation
        return None

    @retry_transient
    def _available_among(self, invocation_ids: Sequence[InvocationId]) -> set[str]:
        """Those that may run now: available, and not waiting for a due time."""
        from pynenc_django.models import DelayedMessage, Invocation

        app_id = self.app.app_id
        found: set[str] = set()
        for chunk in chunked(list(dict.fromkeys(invocation_ids))):
            sql = (
                f"SELECT i.invocation_id FROM {self._table(Invocation)} i WHERE i.app_id = %s"
                f" AND i.invocation_id IN ({', '.join(['%s'] * len(chunk))})"
                f" AND i.status IN ({', '.join(['%s'] * len(_AVAILABLE))})"
                f" AND NOT EXISTS (SELECT 1 FROM {self._table(DelayedMessage)} d"
                " WHERE d.app_id = i.app_id AND d.invocation_id = i.invocation_id)"
            )
            # Prepared for one id (a single ``.result``, the common wait), not per size.
            rows = self._fetch(sql, [app_id, *chunk, *_AVAILABLE], prepare=len(chunk) == 1)
            found.update(row[0] for row in rows)
        return found

    @retry_transient
    def _take_awaited(
        self,
        invocation_id: InvocationId,
        runner_ctx: RunnerContext,
        consumes: Callable[[str], bool],
    ) -> DistributedInvocation | None:
        with named_locks(self.db_alias, self.app.app_id) as lock, self.write_transaction():
            invocation, _ = self._take(invocation_id, runner_ctx, lock, consumes)
            return invocation

    # ------------------------------------------------------------------ claiming work

    def get_additional_invocations_to_run(
        self,
        missing_invocations: int,
        blocking_invocation_ids: set[InvocationId],
        invocations_to_reroute: set[InvocationId],
        runner_ctx: RunnerContext,
        queue_provider: Callable[[], Sequence[str]],
        on_queue_retrieved: Callable[[str], None],
        call: ClaimCall | None = None,
    ) -> Iterator[DistributedInvocation]:
        """pynenc's claim loop, with the broker pop and the PENDING transition committed
        together, so a worker killed between the two can never lose the invocation.
        ``call``: the claim's options, and what it tells its caller (default options).

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
        if call is None:
            call = ClaimCall()
        while missing_invocations > 0:
            queues = queue_provider()
            for queue_name in queues:
                claim = self._claim_from_queue(
                    queue_name, blocking_invocation_ids, runner_ctx, call
                )
                if claim is None:
                    continue  # queue empty
                on_queue_retrieved(queue_name)
                invocation, reroute = claim
                if reroute is not None:
                    invocations_to_reroute.add(reroute)
                if invocation is not None:
                    missing_invocations -= 1
                    call.claimed_the_last_message = len(queues) == 1 and call.queue_look == 1
                    yield invocation
                break
            else:
                return  # every queue was empty

    @retry_transient
    def _claim_from_queue(
        self,
        queue_name: str,
        blocking_invocation_ids: set[InvocationId],
        runner_ctx: RunnerContext,
        call: ClaimCall | None = None,
    ) -> tuple[DistributedInvocation | None, InvocationId | None] | None:
        """Pop one message and decide its fate in one transaction.

        Returns ``None`` when the queue is empty, else ``(invocation to run or None,
        invocation id to reroute or None)``. A message whose invocation cannot run (it is
        already claimed, final, or held back by concurrency control) is consumed, as in
        pynenc's own loop. ``call``: the claim's options; it learns what the pop saw of
        the queue (default options).
        """
        if call is None:
            call = ClaimCall()
        if self._claims_in_one_statement:
            claim = self._claim_in_one_statement(
                queue_name, blocking_invocation_ids, runner_ctx, call
            )
            if claim is not _SLOW_CLAIM:
                return claim
        broker = self._django_broker
        call.queue_look = 0  # unknown
        # An idle worker looks before it takes the write lock, unless it was just woken
        # for new work and the pop tells the queue's length itself.
        if broker.pop_takes_locks and not (call.options.work_announced and broker.pop_looks):
            call.queue_look = broker.look(queue_name)
            if not call.queue_look:
                return None
        with named_locks(self.db_alias, self.app.app_id) as lock, self.write_transaction():
            popped = broker.pop(queue_name)
            if broker.pop_looks:
                call.queue_look = popped.look
            invocation_id = popped.invocation_id
            if invocation_id is None:
                return None
            if invocation_id in blocking_invocation_ids:
                return None, None
            invocation, held = self._take(invocation_id, runner_ctx, lock)
            if not held:
                return invocation, None
            if held.task.conf.reroute_on_concurrency_control:
                self.set_invocation_status(
                    invocation_id, InvocationStatus.CONCURRENCY_CONTROLLED, runner_ctx
                )
                return None, invocation_id
            self.set_invocation_status(
                invocation_id, InvocationStatus.CONCURRENCY_CONTROLLED_FINAL, runner_ctx
            )
            return None, None

    def _take(
        self,
        invocation_id: InvocationId,
        runner_ctx: RunnerContext,
        lock: Callable[[str], None],
        consumes: Callable[[str], bool] | None = None,
    ) -> tuple[DistributedInvocation | None, DistributedInvocation | None]:
        """Inside a claim's transaction (``lock``: its :func:`named_locks`): load the
        invocation and make it PENDING if pynenc's concurrency control allows (and, given
        ``consumes``, if its task's queue is one the caller consumes).

        Returns ``(claimed, None)``, ``(None, held back by concurrency control)``, or
        ``(None, None)`` when it is not claimable: already claimed or final (a stale
        message), or impossible to load here (then it is FAILED with the reason,
        :meth:`_fail_unloadable`, rather than left to crash every worker that pops it).

        Under running concurrency control the check ("nothing of this key is PENDING or
        RUNNING") and the PENDING are made while holding the key's lock, which the next
        claimer of the key waits for until this transaction has committed.
        """
        try:
            invocation = self.app.state_backend.get_invocation(invocation_id)
        except Exception as exc:
            if is_database_error(exc):
                raise
            self._fail_unloadable(invocation_id, exc, runner_ctx, claimed=False)
            return None, None
        if consumes is not None and not consumes(self.route_of(invocation)[0]):
            return None, None
        try:
            return self._make_pending(invocation, runner_ctx, lock)
        except InvocationStatusError as ex:
            # Already claimed, running or final: the message was stale. Only the
            # available-for-run statuses may become PENDING, so this check is pynenc's.
            self.app.logger.debug(f"Skipping invocation:{invocation_id}: {ex}")
            return None, None
        except InvocationNotStoredError as exc:
            # Its arguments are stored but not its status (deleted by hand, or not
            # committed yet where the broker is on another database): nothing can run or
            # fail it. Consumed as the message of an unknown invocation is
            # (:meth:`_fail_unloadable`): left queued, it crashed worker after worker.
            self._drop_unknown(invocation_id, exc)
            return None, None

    def _make_pending(
        self,
        invocation: DistributedInvocation,
        runner_ctx: RunnerContext,
        lock: Callable[[str], None],
    ) -> tuple[DistributedInvocation | None, DistributedInvocation | None]:
        """:meth:`_take` of a loaded invocation: PENDING, if concurrency control allows."""
        invocation_id = invocation.invocation_id
        control = invocation.task.conf.running_concurrency
        if control != DISABLED:
            lock(concurrency_lock_name("running", invocation.call, control))
            if not self.get_invocation_status(invocation_id).is_available_for_run():
                return None, None
            if not self.is_candidate_to_run_by_concurrency_control(invocation):
                return None, invocation
        self.set_invocation_status(invocation_id, InvocationStatus.PENDING, runner_ctx)
        return invocation, None

    def _fail_unloadable(
        self, invocation_id: InvocationId, exc: Exception, runner_ctx: RunnerContext, claimed: bool
    ) -> None:
        """End an invocation this worker cannot load (its task cannot be imported, its
        stored data cannot be read) as FAILED with an :class:`InvocationLoadError` (see
        :meth:`fail_claimed`). Inside the claim's transaction, so the message is consumed
        with it: a poison message must not kill worker after worker."""
        row = self._task_and_status(invocation_id)
        if row is None:
            self._drop_unknown(invocation_id, exc)
            return
        error = InvocationLoadError(invocation_id, str(exc), row[0], type(exc).__name__)
        self.fail_claimed(invocation_id, error, runner_ctx, claimed, status=row[1])

    def _drop_unknown(self, invocation_id: InvocationId, exc: Exception) -> None:
        """Say why a popped message is consumed without an invocation to run or fail."""
        self.app.logger.error(f"Dropping message of unknown invocation:{invocation_id}: {exc}")

    def _task_and_status(self, invocation_id: InvocationId) -> tuple[str, str] | None:
        found = (
            self._invocations()
            .filter(invocation_id=invocation_id)
            .values_list("task_id_key", "status")
        )
        row: tuple[str, str] | None = found.first()
        return row

    def fail_claimed(
        self,
        invocation_id: InvocationId,
        error: Exception,
        runner_ctx: RunnerContext,
        claimed: bool = True,
        status: str | None = None,
    ) -> bool:
        """End an invocation as FAILED with ``error`` without running it, through PENDING
        and RUNNING as pynenc's state machine wants (``claimed``: it is PENDING or RUNNING
        for this worker already; ``status``: which, if known). False when a step was
        refused: someone else has it, or it is final.

        No trigger report: that would load the invocation again."""
        if claimed and status is None:
            row = self._task_and_status(invocation_id)
            status = row[1] if row else None
        steps = [InvocationStatus.RUNNING] if status == InvocationStatus.PENDING.value else []
        if not claimed:
            steps = [InvocationStatus.PENDING, InvocationStatus.RUNNING]
        try:
            for step in steps:
                self.record_status_change(invocation_id, step, runner_ctx)
        except InvocationStatusError as ex:
            self.app.logger.debug(f"Skipping invocation:{invocation_id}: {ex}")
            return False  # a stale message: someone else has it, or it is final
        self.app.logger.error(f"invocation:{invocation_id} FAILED: {error}")
        self.app.state_backend.set_exception(invocation_id, error)
        self.record_status_change(invocation_id, InvocationStatus.FAILED, runner_ctx)
        return True

    @cached_property
    def _claims_in_one_statement(self) -> bool:
        """PostgreSQL, with the broker and the state backend here and the history written
        by the database: the usual claim is one statement (:meth:`_claim_in_one_statement`)."""
        return self.dialect.writes_in_ctes and self._routes_here and self.history_by_database

    def _claim_in_one_statement(
        self,
        queue_name: str,
        blocking_invocation_ids: set[InvocationId],
        runner_ctx: RunnerContext,
        call: ClaimCall | None = None,
    ) -> tuple[DistributedInvocation | None, None] | Literal[_Slow.CLAIM] | None:
        """Pop the head of the queue and make its invocation PENDING in one autocommit
        statement (:attr:`_claim_sql`): one round trip instead of BEGIN, pop, UPDATE and
        COMMIT. Only for the usual case, decided by the database: a task known here to
        run without concurrency control, an invocation free to become PENDING and not one
        this worker runs as a blocking one. A stale message (its invocation taken or
        final) is consumed: ``(None, None)``. Otherwise nothing changes and the caller
        takes the general path (``_SLOW_CLAIM``). ``None``: the queue is empty.
        ``call``: the claim's options (:attr:`ClaimOptions.run_at_once`: claimed straight
        into RUNNING); it learns what the statement saw of the queue (default options)."""
        if call is None:
            call = ClaimCall()
        task_keys = self._cc_free_task_keys()
        if not task_keys:
            return _SLOW_CLAIM
        self.app.state_backend.store_runner_context(runner_ctx)  # the history names it
        runner_id = runner_ctx.runner_id
        running = call.options.run_at_once
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
        params += [app_id, task_keys, sorted(blocking_invocation_ids), *free, *owned]
        if owned:
            params.append(runner_id)
        rows = self._fetch(self._claim_sql(running), [*params, app_id, queue_name, app_id])
        if not rows:
            return None
        invocation_id, claimed, consumed, queued, *state_row = rows[0]
        call.queue_look = int(queued)  # the statement's snapshot still holds its head
        if not claimed:
            return (None, None) if consumed else _SLOW_CLAIM  # consumed: a stale message
        if state_row[0] is not None:
            self.store.remember_row(state_row)
        invocation_id = InvocationId(invocation_id)
        if running:
            self._running_claims[invocation_id] = runner_id
        try:
            invocation = self.app.state_backend.get_invocation(invocation_id)
        except Exception as exc:
            if is_database_error(exc):
                raise
            self._running_claims.pop(invocation_id, None)
            self._fail_unloadable(invocation_id, exc, runner_ctx, claimed=True)
            return None, None
        self._report_status(invocation_id, InvocationStatus.PENDING)
        return invocation, None

    def _cc_free_task_keys(self) -> list[str]:
        """Keys of this process's known tasks that run without concurrency control,
        worked out again only when a task was registered since (one tuple: atomic)."""
        tasks = self.app.tasks
        known, keys = self._cc_free
        if len(tasks) != known:
            keys = sorted(
                task_id.key
                for task_id, task in list(tasks.items())
                if task.conf.running_concurrency == ConcurrencyControlType.DISABLED
            )
            self._cc_free = (len(tasks), keys)
        return keys

    @cached_property
    def _cc_free(self) -> tuple[int, list[str]]:
        """(tasks known, their keys) of :meth:`_cc_free_task_keys`; replaced as a whole."""
        return -1, []

    @cached_property
    def _running_claims(self) -> dict[InvocationId, str]:
        """Invocations claimed straight into RUNNING, by runner id, until they run."""
        return {}

    @cache  # noqa: B019 (two shapes per orchestrator, which lives as long as its app)
    def _claim_sql(self, running: bool) -> str:
        """The vendor's one-statement claim (:meth:`PostgreSQL.claim_sql`), for the tasks
        this process knows to run without concurrency control."""
        free, owned, _ = _PENDING_PLAN
        return self.dialect.claim_sql(
            self.claim_tables,
            allowed=self._allowed_sql(len(free), len(owned), False),
            running=running,
            no_flush=self.dialect.no_flush_condition if self.commits_claims_async else "",
        )

    def reroute_invocations(
        self, invocations_to_reroute: set[InvocationId], runner_ctx: RunnerContext
    ) -> None:
        """pynenc's (REROUTED, then queued again), with both in one transaction (a
        REROUTED invocation without its message would never run again) and the message
        queued at the place the invocation was first given: a worker's crash or a
        concurrency-control deferral must not send it behind everything queued since."""
        if not (self._routes_here and isinstance(self.app.broker, DjangoBroker)):
            super().reroute_invocations(invocations_to_reroute, runner_ctx)
            return
        for invocation_id in invocations_to_reroute:
            self._reroute(invocation_id, runner_ctx)

    @retry_transient
    def _reroute(self, invocation_id: InvocationId, runner_ctx: RunnerContext) -> None:
        broker = self._django_broker
        with self.write_transaction():
            self.set_invocation_status(invocation_id, InvocationStatus.REROUTED, runner_ctx)
            queue, priority = self.route_of(self.app.state_backend.get_invocation(invocation_id))
            queued_at = (
                self._invocations()
                .filter(invocation_id=invocation_id)
                .values_list("registered_at", flat=True)
                .get()
            )
            broker.requeue_invocation(invocation_id, queue, priority, queued_at)

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
