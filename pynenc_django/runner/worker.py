"""A worker process of :class:`~pynenc_django.runner.DjangoPersistentProcessRunner`: its
entry point (Django set up before the app is unpickled) and its loop: claim, run, wait;
run what a running invocation waits for inside its wait; survive the database going away;
reconcile claims whose outcome was lost."""

from __future__ import annotations

import logging
import math
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc import context
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.broker.delayed import DueClock
from pynenc_django.db import in_event_loop, is_database_error
from pynenc_django.ops import recovery
from pynenc_django.ops.recovery import PutBack
from pynenc_django.orchestrator.claim import ClaimOptions
from pynenc_django.runner import task_connections
from pynenc_django.runner.limits import WorkerLimits
from pynenc_django.runner.support import (
    DB_RETRY_MAX_SEC,
    DB_RETRY_MIN_SEC,
    WORKER_CLS,
    close_stale_connections,
    django_orchestrator,
    drain_put_backs,
    summary,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from types import FrameType

    from pynenc.app import Pynenc
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.invocation.dist_invocation import DistributedInvocation

    from pynenc_django.runner import DjangoPersistentProcessRunner
    from pynenc_django.wakeup import Waiter, WakeShared

logger = logging.getLogger("pynenc_django")


class StartupReport:
    """The worker's end of its startup pipe: it tells its runner once that it started
    (it can take work), or why it could not. A runner whose workers keep dying before
    they start stops instead of respawning them forever (``runner_loop_iteration``)."""

    STARTED = b"started"
    FAILED = b"failed:"

    def __init__(self, conn: Connection | None) -> None:
        self.conn = conn

    def started(self) -> None:
        self._send(self.STARTED)

    def failed(self, exc: BaseException) -> None:
        self._send(self.FAILED + summary(exc).encode(errors="replace")[:2000])

    def _send(self, message: bytes) -> None:
        """Once: whatever happens later is not about starting."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.send_bytes(message)
        except OSError:
            pass  # the runner is gone: nobody to tell
        finally:
            conn.close()


def worker_main(
    app_pickle: bytes,
    *,
    lifeline: Connection,
    started: Connection | None = None,
    reports: Connection | None = None,
    parent_runner_ctx_json: str,
    child_runner_id: str,
    parent_pid: int,
    wake: WakeShared | None = None,
) -> None:
    """Entry point of a spawned worker process: :func:`_worker_main`, telling the
    runner through ``started`` (:class:`StartupReport`) why it failed before it started.
    ``reports``: the pipe on which it tells its runner what it runs under a hard time
    limit (:mod:`pynenc_django.runner.limits`); ``wake``: its runner's wake-ups for idle
    workers (:mod:`pynenc_django.wakeup.dispatch`), if it has them."""
    startup = StartupReport(started)
    try:
        _worker_main(
            app_pickle,
            startup,
            lifeline=lifeline,
            reports=reports,
            parent_runner_ctx_json=parent_runner_ctx_json,
            child_runner_id=child_runner_id,
            parent_pid=parent_pid,
            wake=wake,
        )
    except BaseException as exc:
        startup.failed(exc)
        raise


def _worker_main(
    app_pickle: bytes,
    startup: StartupReport,
    *,
    lifeline: Connection,
    reports: Connection | None = None,
    parent_runner_ctx_json: str,
    child_runner_id: str,
    parent_pid: int,
    wake: WakeShared | None = None,
) -> None:
    """The worker process's setup and loop.

    ``lifeline`` is the read end of a pipe only the runner can write to: it reads EOF
    when the runner asks its workers to stop *or* dies, with no shared lock that a
    killed process could leave held (a ``multiprocessing.Event`` can).
    """
    from pynenc_django.db import ensure_django
    from pynenc_django.logs import configure_runner_logging

    # Ctrl-C reaches the whole process group; the runner decides how its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ensure_django()  # before the app is unpickled: task modules may import models
    app: Pynenc = pickle.loads(app_pickle)
    configure_runner_logging(app)
    from pynenc_django.runner import DjangoPersistentProcessRunner  # the package imports us

    runner = DjangoPersistentProcessRunner(app)
    parent_ctx = RunnerContext.from_json(parent_runner_ctx_json)
    ctx = parent_ctx.new_child_context(WORKER_CLS, runner_id=child_runner_id)
    Worker(app, runner, ctx, lifeline, parent_pid, startup, reports, wake).run()


class Worker:
    """The loop of one worker process: claim, run, wait; survive the database going away.

    **Waits never deadlock.** A running invocation that waits for others (``.result``,
    ``group.results``, their async forms) waits through :meth:`wait_for_results`, which
    runs here, nested in the wait, any of them still waiting for a worker. Without it, a
    runner whose every worker waits would wait for good for work only they could take.
    The invocations in progress form a stack (:attr:`running`, outermost first): all are
    this worker's, all are rerouted when it stops mid-way, and all are its runner's to
    reroute when it dies.

    **Time limits** (:mod:`pynenc_django.runner.limits`): it tells its runner which of
    them run under a hard ``time_limit``, and since when (the runner kills it past the
    limit), and raises ``SoftTimeLimitExceeded`` in its outermost invocation's task.
    """

    def __init__(
        self,
        app: Pynenc,
        runner: DjangoPersistentProcessRunner,
        ctx: RunnerContext,
        lifeline: Connection,
        parent_pid: int,
        startup: StartupReport | None = None,
        reports: Connection | None = None,
        wake: WakeShared | None = None,
    ) -> None:
        self.app = app
        self.wake = wake
        self.startup = startup or StartupReport(None)
        self.runner = runner
        self.conf = runner.conf
        self.ctx = ctx
        self.lifeline = lifeline
        self.stop_event = threading.Event()  # set by the watchdog when the lifeline ends
        self.parent_pid = parent_pid
        #: The invocations in progress here, outermost first; more than one while an
        #: invocation waits for one that runs nested in its wait.
        self.running: list[InvocationId] = []
        self.orphaned = threading.Event()
        self.terminating = False
        self.done = threading.Event()
        self._db_backoff = DB_RETRY_MIN_SEC
        # A claim (or a reroute) hit a database error: what this worker owns is unknown
        # until it looks (:meth:`_reconcile`).
        self._claim_in_doubt = False
        self._put_backs: dict[str, PutBack] = {}  # begun, not finished (database errors)
        # How this worker claims: each claim runs at once, here. Its own, like the
        # blocking look's backoff that each claim hands to the next: the orchestrator
        # keeps no caller's state (pynenc's thread runners share one).
        self._claim_options = ClaimOptions(
            run_at_once=True,
            blocking_check_interval=float(self.conf.django_blocking_check_interval_sec),
        )
        self._no_blocking_until = 0.0
        self._due: DueClock | None = None  # set by run(), once the waiter knows itself
        self._expired_in_claim = False  # the last claim consumed an expired invocation
        #: Time limits: what it tells its runner, and the soft limit's timer.
        self.limits = WorkerLimits(app, reports, nested=lambda: len(self.running) > 1)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set() or self.orphaned.is_set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        # Every wait of an invocation run here reaches this worker through its runner.
        context.set_current_runner(self.app.app_id, self.runner)
        self.runner.worker = self
        watchdog = threading.Thread(target=self._watch_runner, name="pynenc-watchdog", daemon=True)
        watchdog.start()
        waiter = self._make_waiter()
        # Task functions get a connection of their own (Django's per-request hygiene); the
        # worker's stays open whatever CONN_MAX_AGE says (:mod:`.task_connections`).
        task_connections.enable(self.runner.db_alias, set_up=django_orchestrator(self.app).prepares)
        try:
            self._with_db_retries(lambda: self.runner._register_new_child_runner_context(self.ctx))
            context.set_runner_context(self.app.app_id, self.ctx)
            self.app.logger.info(f"Persistent process worker started with pid:{os.getpid()}")
            self.startup.started()
            waiter.start()
            due = self._due = self._due_clock()
            while not self.stopping:
                self._promote_due(due)
                invocation, drained = self._claim(announced=waiter.woken)
                if invocation is None:
                    if self._expired_in_claim:
                        continue  # it consumed an expired one: the queue may hold more
                    close_stale_connections(self.runner.db_alias)
                    self._wait(waiter, due)
                    continue
                waiter.found_work()
                if not drained:
                    waiter.pass_on()  # more may be queued: another idle worker looks
                self._run(invocation)
                if drained and waiter.wakes:
                    # It was the queue's only message: what was enqueued since has been
                    # announced (the wait returns at once), so look when woken; or, where
                    # only this host's enqueues are (MariaDB), after the shortest sleep.
                    self._wait(waiter, due)
        except KeyboardInterrupt:
            self.app.logger.info(f"worker:{self.ctx.runner_id} interrupted, exiting")
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.done.set()
            for invocation_id in reversed(self.running):
                self.app.logger.warning(
                    f"worker:{self.ctx.runner_id} stopping during "
                    f"invocation:{invocation_id}, rerouting it"
                )
                self._reroute(invocation_id)
            waiter.close()
            task_connections.disable()
            self.app.logger.info(f"worker:{self.ctx.runner_id} shutting down")

    def _make_waiter(self) -> Waiter:
        """Its runner's wake-ups, if the runner listens for its workers
        (:mod:`pynenc_django.wakeup.dispatch`); otherwise a waiter of its own."""
        from pynenc_django.wakeup import DispatchedWaiter

        if self.wake is None:
            return self.runner.work_waiter(self.stop_event)
        return DispatchedWaiter(
            self.wake,
            self.stop_event,
            min_wait=float(self.conf.runner_loop_sleep_time_sec),
            max_wait=float(self.conf.django_idle_wait_max_sec),
            notified_max_wait=float(self.conf.django_notify_safety_poll_sec),
        )

    def _due_clock(self) -> DueClock | None:
        """Delayed messages (``countdown``, retry backoff) this worker moves to their
        queues when due; it looks up the earliest due time after each promotion, when a
        wait hears of a new one, and otherwise every other safety poll."""
        from pynenc_django.broker import DjangoBroker

        broker = self.app.broker
        if not isinstance(broker, DjangoBroker):
            return None
        # Where announcements do not reach every process (MariaDB's other hosts), each
        # idle poll's look at the queue reads the earliest due time along (broker.look),
        # and so does SQLite's safety poll: a look-up of its own every other safety poll
        # is for PostgreSQL, whose claims do not look, and for what no one announced.
        refresh = 2 * float(self.conf.django_notify_safety_poll_sec)
        return DueClock(broker, refresh, retry_sec=float(self.conf.runner_loop_sleep_time_sec))

    def _promote_due(self, due: DueClock | None) -> int:
        """Move what is due to its queue; how many (0 after a database error)."""
        if due is None:
            return 0
        try:
            return due.promote_if_due()
        except Exception as exc:
            if not is_database_error(exc):
                raise
            self._database_unavailable(exc)
            return 0

    def _wait(self, waiter: Waiter, due: DueClock | None) -> None:
        """The waiter's wait, ending by the earliest due time; what it heard of delayed
        messages goes to ``due``. A wait ended only by news of a delayed message (a due
        time, not work) sleeps on to the new time instead of claiming in vain."""
        while True:
            waiter.wait(None if due is None else due.seconds_until_due())
            heard = waiter.take_due_news()
            if due is None or self.stopping:
                return
            due.hear(*heard)
            if not waiter.due_only or self._promote_due(due):
                return

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """Stop now. A running invocation is interrupted (``run`` reroutes it); otherwise
        only flag it, so no database call or lock is cut in half."""
        self.app.logger.warning(f"worker:{self.ctx.runner_id} received signal:{signum}, stopping")
        self.terminating = True
        self.stop_event.set()
        if self.running:
            raise KeyboardInterrupt

    def _claim(self, announced: bool) -> tuple[DistributedInvocation | None, bool]:
        """One invocation or none, and whether it was its queue's last message;
        ``announced``: the waiter was just woken for new work, so the claim may skip its
        look at the queue.

        A claim whose connection died as it committed may have happened (the queue pop and
        PENDING, or RUNNING, committed) without this worker learning which invocation it
        got. So after any database error in a claim, including one that
        :func:`~pynenc_django.db.retry_transient` retried silently (it counts them,
        :func:`~pynenc_django.ops.recovery.connection_losses`), the worker reconciles as soon
        as the database answers: it puts back every invocation it owns but the one it is
        about to run. Nothing else can: its heartbeat stays fresh.
        """
        # The first claim after a wait that new work ended skips pynenc's look for
        # blocking invocations (one statement, most of a short round trip's wake-up): this
        # worker's queues were empty when it began to wait, so what it claims now was
        # announced since. The look resumes at its next claim while it stays busy.
        options = replace(
            self._claim_options,
            work_announced=announced,
            no_blocking_until=math.inf if announced else self._no_blocking_until,
        )
        claimed = self._guarded_claim(
            lambda: django_orchestrator(self.app).claim(
                self.ctx,
                options,
                queue_provider=self.runner.queue_names_for_retrieval,
                on_queue_retrieved=self.runner.note_queue_retrieved,
            ),
            lambda claimed: claimed.invocations[0] if claimed.invocations else None,
        )
        self._expired_in_claim = claimed is not None and claimed.expired > 0
        if claimed is None:
            return None, False
        if not announced:
            self._no_blocking_until = claimed.no_blocking_until
        invocation = claimed.invocations[0] if claimed.invocations else None
        return invocation, claimed.claimed_the_last_message

    def _guarded_claim[T](
        self, claim: Callable[[], T], taken: Callable[[T], DistributedInvocation | None]
    ) -> T | None:
        """``claim()``, surviving the database (see :meth:`_claim`): ``None`` after a
        database error, reconciling first when a claim is in doubt and after one whose
        connection was lost; ``taken`` tells which invocation the claim got, to keep."""
        if (self._claim_in_doubt or self._put_backs) and not self._reconcile():
            return None
        losses = recovery.connection_losses()
        try:
            claimed = claim()
        except Exception as exc:
            if not is_database_error(exc):
                raise
            self._claim_in_doubt = True
            self._database_unavailable(exc)
            return None
        self._db_backoff = DB_RETRY_MIN_SEC
        if recovery.connection_losses() != losses:
            self._claim_in_doubt = True
            invocation = taken(claimed)
            self._reconcile(keep=invocation.invocation_id if invocation else None)
        return claimed

    def _reconcile(self, keep: InvocationId | None = None) -> bool:
        """Put back every invocation this worker owns (PENDING, RUNNING, PAUSED) except
        ``keep`` and those in progress (:attr:`running`): it can only own others through a
        claim (or a status change) whose outcome it never learned. False if the database
        is still down."""
        kept = {*self.running, keep}
        try:
            held = django_orchestrator(self.app).get_owned_invocation_ids([self.ctx.runner_id])
            for invocation_id in held:
                if invocation_id not in kept and invocation_id not in self._put_backs:
                    self.app.logger.warning(
                        f"worker:{self.ctx.runner_id} owns invocation:{invocation_id} but "
                        "runs nothing (a claim or status change whose outcome was lost "
                        "with its connection); putting it back in its queue"
                    )
                    self._put_backs[invocation_id] = PutBack(self.app, invocation_id, self.ctx)
            self._drain_put_backs()
        except Exception as exc:
            if not is_database_error(exc):
                raise
            self._database_unavailable(exc)
            return False
        self._claim_in_doubt = False
        return True

    def _drain_put_backs(self) -> None:
        drain_put_backs(self._put_backs, self.app.logger)

    def _run(self, invocation: DistributedInvocation) -> None:
        """Run one invocation, outermost or nested in a wait (:meth:`wait_for_results`)."""
        invocation_id = invocation.invocation_id
        outermost = not self.running
        self.running.append(invocation_id)
        if self.terminating:  # SIGTERM arrived while claiming: hand it back untouched
            raise KeyboardInterrupt
        if outermost:  # a nested run must not close a connection its waiter may use
            task_connections.check_worker_connection(self.runner.db_alias)
        losses = recovery.connection_losses()
        try:
            with self.limits.running(invocation, outermost):
                invocation.run(self.ctx)
        except Exception as exc:
            # pynenc records a task's own exception (FAILED, or RETRY), logs it and
            # re-raises it: nothing is left to do (a waiter reads it from the result).
            # Otherwise the outcome could not be stored (typically the database went
            # away): the invocation is not final.
            if not self._finished(invocation_id):
                self.app.logger.error(
                    f"worker:{self.ctx.runner_id} could not store the outcome of "
                    f"invocation:{invocation_id} ({summary(exc)}); rerouting it"
                )
                self._reroute(invocation_id)
        if recovery.connection_losses() != losses:
            # A status write was retried after a lost connection: if the first attempt had
            # committed, the retry was refused, and pynenc may have left the invocation
            # RUNNING (ours) without running it. Look before the next claim.
            self._claim_in_doubt = True
        # Not in a ``finally``: an interrupted invocation must stay known to ``run``,
        # which reroutes it.
        self.running.remove(invocation_id)
        if outermost:
            task_connections.check_worker_connection(self.runner.db_alias)

    # ------------------------------------------------------------------ waits

    def wait_for_results(self, waited: list[InvocationId]) -> None:
        """One turn of an invocation's wait for ``waited`` (pynenc repeats it until they
        are final): run one of them here, nested, if it still waits for a worker (on a
        queue this runner consumes, not held by concurrency control); otherwise wait for
        a final status to be announced, as a client does.

        Those running elsewhere progress there; one rerouted meanwhile (its worker died)
        is taken at the next turn. A wait that nothing can resolve (a queue no runner
        consumes, a concurrency key its own waiter holds) is what ``pynenc_status``
        reports as a stuck wait.
        """
        self._promote_due(self._due)  # what it waits for may be due now (a countdown)
        if invocation := self._claim_awaited(waited):
            if in_event_loop():
                self._run_beside_event_loop(invocation)
            else:
                self._run(invocation)
            return
        self.runner.wait_for_client_results(waited)

    @cached_property
    def _consumed_queues(self) -> frozenset[str]:
        """The queues this worker's runner takes work from (pynenc: an empty list of the
        runner's own means every queue the broker declares)."""
        return frozenset(self.conf.queues or self.app.broker.conf.queues)

    def _claim_awaited(self, waited: list[InvocationId]) -> DistributedInvocation | None:
        """:meth:`DjangoOrchestrator.claim_awaited`, surviving the database as
        :meth:`_claim` does."""
        return self._guarded_claim(
            lambda: django_orchestrator(self.app).claim_awaited(
                waited, self.ctx, self._consumed_queues.__contains__
            ),
            lambda invocation: invocation,
        )

    def _run_beside_event_loop(self, invocation: DistributedInvocation) -> None:
        """Run it in a thread of its own: the waiter is an async task, whose event loop
        runs in this thread, and pynenc cannot start an async task's loop inside another.
        This thread waits for it awake, so a SIGTERM still interrupts the wait."""
        thread = threading.Thread(
            target=self._run_in_thread, args=(invocation,), name="pynenc-nested", daemon=True
        )
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
            if self.terminating:
                raise KeyboardInterrupt

    def _run_in_thread(self, invocation: DistributedInvocation) -> None:
        from django.db import connections

        context.set_current_runner(self.app.app_id, self.runner)  # per thread
        try:
            self._run(invocation)
        finally:
            connections.close_all()  # this thread's own

    def _finished(self, invocation_id: InvocationId) -> bool:
        """Whether the invocation reached a final status (a database error: unknown, no)."""
        try:
            return bool(self.app.orchestrator.get_invocation_status(invocation_id).is_final())
        except Exception as exc:
            if not is_database_error(exc):
                raise
            return False

    def _reroute(self, invocation_id: InvocationId) -> None:
        """KILLED then REROUTED, retried until the database answers; a no-op if final.

        Given up after ``django_reroute_timeout_sec``: the next claim tries again
        (:meth:`_reconcile`), and so do live runners once it is KILLED for long."""
        put_back = self._put_backs.setdefault(
            invocation_id, PutBack(self.app, invocation_id, self.ctx)
        )
        self._with_db_retries(put_back, give_up_after=float(self.conf.django_reroute_timeout_sec))
        if put_back.done:
            self._put_backs.pop(invocation_id, None)
        else:
            self._claim_in_doubt = True

    def _with_db_retries(self, action: Any, give_up_after: float | None = None) -> None:
        deadline = None if give_up_after is None else time.monotonic() + give_up_after
        while True:
            try:
                action()
                return
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                if deadline is not None and time.monotonic() > deadline:
                    self.app.logger.error(
                        f"worker:{self.ctx.runner_id} gave up on the database: {exc}; "
                        "pynenc's recovery services will pick the work up"
                    )
                    return
                self._database_unavailable(exc)

    def _database_unavailable(self, exc: BaseException) -> None:
        self.app.logger.warning(
            f"worker:{self.ctx.runner_id} database unavailable ({summary(exc)}); "
            f"retrying in {self._db_backoff:.1f}s"
        )
        close_stale_connections(self.runner.db_alias)
        self.stop_event.wait(self._db_backoff)
        self._db_backoff = min(DB_RETRY_MAX_SEC, self._db_backoff * 2)

    def _watch_runner(self) -> None:
        """Stop when the runner says so or dies; if it died, keep this worker's heartbeat
        fresh while the current invocation finishes, so nobody "recovers" it meanwhile."""
        context.set_runner_context(self.app.app_id, self.ctx)  # contexts are per thread
        while not self.done.is_set():
            try:
                if not self.lifeline.poll(None):
                    continue
                self.lifeline.recv_bytes()  # nothing is ever sent: only EOF ends the wait
            except (EOFError, OSError):
                break
        self.stop_event.set()
        # The kernel closes a dead runner's pipe before it re-parents its children, so
        # EOF alone does not tell a stop request from a death: watch until we are done.
        while os.getppid() == self.parent_pid:
            if self.done.wait(0.1):
                return
        self.app.logger.warning(
            f"worker:{self.ctx.runner_id} lost its runner (pid {self.parent_pid}); "
            "finishing the current invocation, then exiting"
        )
        self.orphaned.set()
        # Beat at once: the runner's last beat for us may be a whole interval old, and
        # live runners take the work of workers whose heartbeat is stale.
        beat_every = float(self.conf.django_heartbeat_interval_sec)
        while True:
            if self.running:
                try:
                    self.app.orchestrator.register_runner_heartbeats([self.ctx.runner_id])
                except Exception as exc:  # the next round retries
                    self.app.logger.warning(f"worker heartbeat failed: {exc}")
            if self.done.wait(beat_every):
                return
