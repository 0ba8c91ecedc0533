"""``DjangoPersistentProcessRunner``: pynenc's PersistentProcessRunner, fit for Django.

What it changes, and why (pynenc's own runner does none of this):

* **Waits never deadlock.** A task that waits for others' results (``.result``,
  ``group.results``, their async forms) runs, inside its wait, those still queued
  (:meth:`Worker.wait_for_results <pynenc_django.runner.worker.Worker.wait_for_results>`),
  so a runner whose every worker waits still makes progress. pynenc's own runner sleeps.
* **Workers start Django first.** A spawned worker runs ``django.setup()`` before the app
  (and so the user's task modules) is unpickled; task modules may import models.
* **Idle workers wait, they do not poll.** See :mod:`pynenc_django.wakeup`.
* **At-least-once delivery.** The broker pop and the PENDING transition commit together
  (:meth:`DjangoOrchestrator.get_additional_invocations_to_run`); when a worker dies the
  runner reroutes what it held at once instead of waiting for heartbeats to age.
* **A lost runner host is recovered within seconds, not minutes.** Every runner looks,
  every heartbeat interval, for invocations owned by workers whose heartbeat is older
  than ``django_runner_dead_after_sec`` (30 s) and puts them back in their queue
  (:mod:`pynenc_django.ops.recovery`), without waiting for pynenc's cron-driven recovery.
* **A claim lost in flight is resolved.** When the connection dies as a claim (or a
  status change) commits, the worker cannot know whether it happened; as soon as the
  database answers, it puts back whatever it owns besides the invocation it is about to
  run.
* **A task's own failure is not a storage failure.** pynenc records and logs it; only an
  invocation whose outcome could not be stored is rerouted.
* **Workers do not outlive their runner.** A worker whose runner died finishes its
  current invocation (keeping its own heartbeat fresh meanwhile) and exits.
* **The worker's own connection does not depend on ``CONN_MAX_AGE``.** It stays open
  (closed once broken); task code runs on a second connection with Django's per-request
  hygiene (``close_old_connections`` around each task), see
  :mod:`pynenc_django.runner.task_connections`. The worker's own connection gets its
  database's set-up for pynenc's statements (PostgreSQL: plans that always use an index,
  :attr:`~pynenc_django.vendors.base.Vendor.own_connection_setup`); the task's does not.
* **Database outages are survived.** Database errors in the loops are logged and retried
  with backoff, never fatal; a broken connection is closed and reopened; an invocation
  interrupted by one is rerouted once the database is back.
* **Graceful stop.** The first SIGTERM/SIGINT stops taking work, lets running
  invocations finish for ``django_shutdown_grace_sec`` and reroutes the rest; a second
  signal kills the workers at once and the runner reroutes their invocations.
* **Revoke and time limits.** A ``revoke(..., terminate=True)`` of an invocation one of
  its workers runs, or an invocation past its task's ``time_limit``, gets that worker
  killed, the invocation recorded FAILED (never put back) and the worker replaced
  (:mod:`pynenc_django.calling.revoke`, :mod:`pynenc_django.runner.limits`).
* No ``multiprocessing.Manager`` server process, and the spawn start method is used
  for our workers only, not forced on the whole process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from pynenc.orchestrator.atomic_service import AtomicServiceExecutionStatus
from pynenc.runner.persistent_process_runner import PersistentProcessRunner
from pynenc.runner.runner_context import RunnerContext
from pynenc.util.subclasses import get_all_subclasses

from pynenc_django.calling.revoke import (
    PendingRevoke,
    cancel_waiting,
    drop_revoke_request,
    pending_revokes,
    revoke_runner_context,
)
from pynenc_django.conf import ConfigDjangoPersistentProcessRunner
from pynenc_django.db import is_database_error
from pynenc_django.exceptions import TimeLimitExceededError, WorkersCannotStartError
from pynenc_django.ops import recovery
from pynenc_django.ops.planner import FirstAnalyze
from pynenc_django.ops.recovery import PutBack
from pynenc_django.orchestrator.reads import ClientResultsWaiter
from pynenc_django.trigger.schedule import warn_if_test_clock
from pynenc_django.utils import now_utc
from pynenc_django.wakeup import (
    Announcer,
    ResultWaiter,
    WakeShared,
    dispatchable,
    make_waiter,
    result_waiter,
)
from pynenc_django.wakeup.revokes import RevokeWake
from pynenc_django.wakeup.triggers import TriggerWake

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from types import FrameType

    from pynenc.app import Pynenc
    from pynenc.identifiers.invocation_id import InvocationId

    from pynenc_django.runner.worker import Worker
    from pynenc_django.wakeup import Waiter
    from pynenc_django.wakeup.work import StopEvent

from pynenc_django.runner.limits import WorkerReports
from pynenc_django.runner.support import (
    WORKER_CLS,
    close_stale_connections,
    django_orchestrator,
    drain_put_backs,
    fail_owned,
)
from pynenc_django.runner.worker import StartupReport, worker_main

SPAWN = multiprocessing.get_context("spawn")

#: Workers in a row that die before they start (no start in between) that stop the runner.
EARLY_DEATHS_LIMIT = 5
#: A spawned worker re-running an unguarded main module exits with this (EX_CONFIG).
UNGUARDED_MAIN_EXIT_CODE = 78
#: How long the runner waits for a worker it SIGKILLed (revoke, time limit) to be gone.
KILL_WAIT_SEC = 5.0


def runner_class_names() -> list[str]:
    """Names of :class:`DjangoPersistentProcessRunner` and its subclasses: the runners
    whose workers' heartbeats a runner can judge, and that honour revoke requests."""
    classes: list[type[DjangoPersistentProcessRunner]] = [
        DjangoPersistentProcessRunner,
        *get_all_subclasses(DjangoPersistentProcessRunner),
    ]
    return sorted({cls.__name__ for cls in classes})


class DjangoPersistentProcessRunner(PersistentProcessRunner, ClientResultsWaiter):
    """A fixed pool of spawned worker processes; see the module docstring."""

    def __init__(
        self,
        app: Pynenc,
        runner_cache: dict | None = None,
        runner_context: RunnerContext | None = None,
    ) -> None:
        if _reimporting_main():
            _exit_unguarded_main()
        self.forced_stop = False
        # Workers not started yet: their startup pipes (StartupReport); and how many died
        # in a row before they started, with what the last one said.
        self._starting: dict[str, Connection] = {}
        self._unstarted: dict[str, bytes] = {}  # said they failed, or died without a word
        self._early_deaths = 0
        self.startup_failure: str | None = None
        self._stop_signals = 0
        self._last_heartbeat = 0.0
        self._unrecovered: set[str] = set()
        self._spawned: set[str] = set()
        # Reroutes begun and not finished (a database error between KILLED and REROUTED).
        self._put_backs: dict[str, PutBack] = {}
        # Invocations of workers killed for them (revoke, time limit), by worker, with
        # their error: recorded FAILED before anything of the worker is put back.
        self._doomed: dict[str, dict[str, Exception]] = {}
        # What the workers report running under a hard time limit.
        self._reports = WorkerReports()
        self._last_revoke_look = 0.0
        # Lost runners (_recover_lost_runners): when this runner last looked, and since
        # when it has reached the database without an error.
        self._last_sweep = 0.0
        self._db_healthy_since = time.monotonic()
        self._seen_losses = recovery.connection_losses()
        #: Shared with the workers: their wake-ups (:meth:`_start_work_announcer`).
        self._wake: WakeShared | None = None
        #: In a worker process, the worker whose invocations wait through this runner.
        self.worker: Worker | None = None
        super().__init__(app, runner_cache, runner_context)
        self._first_analyze = FirstAnalyze(self.db_alias)

    @cached_property
    def conf(self) -> ConfigDjangoPersistentProcessRunner:
        return ConfigDjangoPersistentProcessRunner(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )

    @property
    def db_alias(self) -> str:
        return str(self.conf.django_db_alias)

    # ------------------------------------------------------------------ lifecycle

    def waiting_for_results(
        self,
        running_invocation_id: InvocationId | None,
        result_invocation_ids: list[InvocationId],
        runner_args: dict[str, Any] | None = None,
    ) -> None:
        """Outside the runner (``invocation.result`` in a web request or a script), wait
        for the database to announce a final status instead of sleeping 0.1 s."""
        if running_invocation_id:
            super().waiting_for_results(running_invocation_id, result_invocation_ids, runner_args)
            return
        self.wait_for_client_results(result_invocation_ids)

    async def async_waiting_for_results(
        self,
        running_invocation_id: InvocationId | None,
        result_invocation_ids: list[InvocationId],
        runner_args: dict[str, Any] | None = None,
    ) -> None:
        """Outside the runner (``await invocation.async_result()`` in an async view), the
        same announced wait as ``.result``, in a thread, so that the event loop goes on:
        pynenc's sleeps ``invocation_wait_results_sleep_time_sec`` between looks."""
        if running_invocation_id:
            await super().async_waiting_for_results(
                running_invocation_id, result_invocation_ids, runner_args
            )
            return
        await asyncio.to_thread(self.wait_for_client_results, list(result_invocation_ids))

    def _waiting_for_results(
        self,
        running_invocation_id: InvocationId,
        result_invocation_ids: list[InvocationId],
        runner_args: dict[str, Any] | None = None,
    ) -> None:
        """An invocation running in a worker waits: the worker runs what it waits for
        (:meth:`Worker.wait_for_results <pynenc_django.runner.worker.Worker.wait_for_results>`).
        Anywhere else (a runner used by hand), wait for an announced final status."""
        if self.worker is not None:
            self.worker.wait_for_results(result_invocation_ids)
        else:
            self.wait_for_client_results(result_invocation_ids)

    def wait_for_client_results(self, result_invocation_ids: list[InvocationId]) -> None:
        """Until the database announces a final status (or the safety poll)."""
        self._result_waiter.wait(list(result_invocation_ids))

    @cached_property
    def _result_waiter(self) -> ResultWaiter:
        return result_waiter(
            self.db_alias,
            max_wait=float(self.conf.invocation_wait_results_sleep_time_sec),
            listen=bool(self.conf.django_listen_notify),
            idle_close=float(self.conf.django_result_listen_idle_sec),
        )

    def _on_start(self) -> None:
        from pynenc_django.db import ensure_django

        ensure_django()
        warn_if_test_clock()
        self.num_processes = max(
            self.conf.min_parallel_slots, self.conf.num_processes or os.cpu_count() or 1
        )
        self.logger.info(f"Creating {self.num_processes} worker processes")
        self.child_runner_ids = {}
        self.runner_cache = self._runner_cache if self._runner_cache is not None else {}
        self.stop_event = None  # pynenc's Manager event; our workers use the lifeline
        self._lifeline, self._lifeline_writer = SPAWN.Pipe(duplex=False)
        self._wake = self._start_work_announcer()
        for _ in range(self.num_processes):
            self._spawn_persistent_process()

    def _start_work_announcer(self) -> WakeShared | None:
        """Listen for new work once, for every worker, where every enqueue is announced
        (:mod:`pynenc_django.wakeup.dispatch`): one idle worker woken per enqueue.
        ``None`` elsewhere: each worker waits on its own."""
        stop = threading.Event()
        waiter = self.work_waiter(stop)
        if not dispatchable(waiter):
            waiter.close()
            return None
        shared = WakeShared.create(SPAWN)
        self._work_announcer = Announcer(waiter, stop, shared, self.num_processes)
        self._work_announcer.start()
        return shared

    def work_waiter(self, stop_event: StopEvent) -> Waiter:
        """How this database lets a process wait for new work
        (:func:`~pynenc_django.wakeup.make_waiter`), with this runner's settings."""
        return make_waiter(
            self.db_alias,
            self.app.app_id,
            stop_event,
            min_wait=float(self.conf.runner_loop_sleep_time_sec),
            max_wait=float(self.conf.django_idle_wait_max_sec),
            notified_max_wait=float(self.conf.django_notify_safety_poll_sec),
            listen=bool(self.conf.django_listen_notify),
        )

    def _spawn_persistent_process(self) -> str | None:
        if not self.running:
            raise RuntimeError("Trying to spawn new process after stopping loop")
        child_runner_id = str(uuid.uuid4())
        started, started_writer = SPAWN.Pipe(duplex=False)
        reports, reports_writer = SPAWN.Pipe(duplex=False)
        process = SPAWN.Process(
            target=worker_main,
            kwargs={
                "app_pickle": pickle.dumps(self.app),
                "lifeline": self._lifeline,
                "started": started_writer,
                "reports": reports_writer,
                "parent_runner_ctx_json": self.runner_context.to_json(),
                "child_runner_id": child_runner_id,
                "parent_pid": os.getpid(),
                "wake": self._wake,
            },
            daemon=True,
            name=f"pynenc-worker-{child_runner_id[:8]}",
        )
        try:
            process.start()
        finally:
            started_writer.close()  # the worker's now: EOF once it is gone
            reports_writer.close()
        self._starting[child_runner_id] = started
        self._reports.add(child_runner_id, reports)
        # pynenc types these as multiprocessing.Process; a spawn context's SpawnProcess is
        # a sibling BaseProcess class with the same interface.
        self.child_runner_ids[child_runner_id] = process  # type: ignore[assignment]
        self._spawned.add(child_runner_id)
        self.logger.info(f"Spawned worker pid:{process.pid} worker:{child_runner_id}")
        return child_runner_id

    def runner_loop_iteration(self) -> None:
        """Kill the workers of revoked invocations and of those past their time limit;
        reap dead workers (rerouting what they held, but for those), respawn, retry
        pending recoveries; give new tables their first statistics
        (:mod:`pynenc_django.ops.planner`).

        Workers that die before they start, :data:`EARLY_DEATHS_LIMIT` in a row, stop
        the runner (:meth:`run` raises ``WorkersCannotStartError``): respawning them
        would only fail again, forever."""
        self._note_started()
        self._enforce_time_limits()
        self._look_for_revokes()
        for runner_id, process in list(self.child_runner_ids.items()):
            if process.is_alive():
                continue
            self.child_runner_ids.pop(runner_id, None)
            self._reports.drop(runner_id)
            self.logger.warning(
                f"worker:{runner_id} pid:{process.pid} exited with code {process.exitcode}"
            )
            self._unrecovered.add(runner_id)
            self._note_exit(runner_id, process.exitcode)
        if self._unrecovered or self._put_backs or self._doomed:
            self._recover_workers()
        while self.running and len(self.child_runner_ids) < self.num_processes:
            self._spawn_persistent_process()
        self._recover_lost_runners()
        self._first_analyze.tick()

    def _note_started(self) -> None:
        """Read what workers said on their startup pipes: a start resets the count of
        early deaths; a failure is kept for when the worker is reaped."""
        for runner_id, pipe in list(self._starting.items()):
            if pipe.poll():
                self._read_startup(runner_id)

    def _read_startup(self, runner_id: str) -> bytes:
        """The one message of a worker's startup pipe (empty: it died without a word)."""
        pipe = self._starting.pop(runner_id)
        message = _startup_message(pipe)
        pipe.close()
        if message == StartupReport.STARTED:
            self._early_deaths = 0
        else:
            self._unstarted[runner_id] = message
        return message

    def _note_exit(self, runner_id: str, exitcode: int | None) -> None:
        """Count a worker that died before it started; stop the runner at the limit."""
        if runner_id in self._starting:
            self._read_startup(runner_id)
        if runner_id not in self._unstarted:
            return  # it had started: a later death (killed, OOM) is replaced as ever
        message = self._unstarted.pop(runner_id)
        self._early_deaths += 1
        if self._early_deaths < EARLY_DEATHS_LIMIT or not self.running:
            return
        error = message.removeprefix(StartupReport.FAILED).decode(errors="replace")
        self.startup_failure = _early_deaths_message(self._early_deaths, exitcode, error)
        self.logger.error(self.startup_failure)
        self.running = False

    def run(self) -> None:
        """pynenc's loop; ``WorkersCannotStartError`` once stopped because workers kept
        dying before they could start (:meth:`runner_loop_iteration`)."""
        try:
            super().run()
        finally:
            for pipe in self._starting.values():
                pipe.close()
            self._starting.clear()
            self._reports.close()
        if self.startup_failure is not None:
            raise WorkersCannotStartError(self.startup_failure)

    def _recover_workers(self) -> None:
        """Reroute every invocation still held by workers that are gone, except those
        killed for (revoked, past their time limit) and those with a revoke request:
        they are recorded FAILED first, and never put back."""
        with self._survive_database_errors("Could not reroute dead workers' invocations yet"):
            self._drain_put_backs()
            self._fail_doomed()
            for runner_id in sorted(self._unrecovered):
                held = django_orchestrator(self.app).get_owned_invocation_ids([runner_id])
                if held:  # revoked while its worker died (of another cause)
                    for request in pending_revokes(self.app, self.db_alias, held):
                        doomed = self._doomed.setdefault(runner_id, {})
                        doomed[request.invocation_id] = request.error(terminated=True)
                failed = self._fail_doomed()
                ctx = self.runner_context.new_child_context(WORKER_CLS, runner_id=runner_id)
                for invocation_id in held:
                    if invocation_id in self._put_backs or invocation_id in failed:
                        continue
                    self.logger.warning(
                        f"Rerouting invocation:{invocation_id} of dead worker:{runner_id}"
                    )
                    self._put_backs[invocation_id] = PutBack(self.app, invocation_id, ctx)
                self._drain_put_backs()
                self._unrecovered.discard(runner_id)

    def _drain_put_backs(self) -> None:
        drain_put_backs(self._put_backs, self.logger)

    @cached_property
    def _runner_classes(self) -> list[str]:
        """Names of the runner classes whose workers' heartbeats this runner can judge."""
        return runner_class_names()

    # ------------------------------------------------------------------ revoke, limits

    def _enforce_time_limits(self) -> None:
        """Kill each worker running an invocation past its hard ``time_limit``, as its
        report says (:class:`~pynenc_django.runner.limits.WorkerReports`); no statement."""
        self._reports.read()
        for runner_id, limited in self._reports.overdue(time.monotonic()):
            if runner_id not in self.child_runner_ids:
                continue
            error = TimeLimitExceededError(
                limited.invocation_id,
                task_id_key=limited.task_id_key,
                time_limit=limited.time_limit,
            )
            self._doom(runner_id, limited.invocation_id, error)

    def _look_for_revokes(self) -> None:
        """Read the revoke requests when one was announced (:class:`RevokeWake`, no
        statement), and otherwise every ``django_heartbeat_interval_sec`` (one statement),
        for what no announcement reached; act on those this runner can."""
        now = time.monotonic()
        woken = self._revoke_wake.woken()
        if not woken and now - self._last_revoke_look < float(
            self.conf.django_heartbeat_interval_sec
        ):
            return
        self._last_revoke_look = now
        with self._survive_database_errors("Could not read the revoke requests"):
            for request in pending_revokes(self.app, self.db_alias):
                self._act_on_revoke(request)

    def _act_on_revoke(self, request: PendingRevoke) -> None:
        """A revoke request: done with when its invocation finished (or is gone); cancelled
        if it is back in its queue (its worker died, or it was rerouted meanwhile); with
        ``terminate``, its worker killed if it is one of ours. Other runners' workers are
        theirs to kill."""
        status = request.status
        if status is None or status.is_final():
            drop_revoke_request(self.db_alias, request.request_id)
            return
        if status.is_available_for_run():
            if not cancel_waiting(
                django_orchestrator(self.app),
                request.invocation_id,
                request.error(terminated=False),
                revoke_runner_context(request.requested_by),
            ):
                self._last_revoke_look = 0.0  # a worker took it meanwhile: look again now
            return
        owner = request.owner
        if owner is None or not request.terminate:
            return
        if owner in self.child_runner_ids or owner in self._unrecovered:
            self._doom(owner, request.invocation_id, request.error(terminated=True))

    def _doom(self, runner_id: str, invocation_id: str, error: Exception) -> None:
        """Kill worker ``runner_id`` (SIGKILL: it may be stuck anywhere) for
        ``invocation_id``, which :meth:`_fail_doomed` records FAILED with ``error`` before
        the worker's other invocations are put back; the loop replaces the worker."""
        doomed = self._doomed.setdefault(runner_id, {})
        if invocation_id in doomed:
            return
        doomed[invocation_id] = error
        self._reports.drop(runner_id)
        process = self.child_runner_ids.get(runner_id)
        if process is not None and process.is_alive():
            self.logger.warning(
                f"Killing worker:{runner_id} pid:{process.pid} for invocation:{invocation_id}: "
                f"{error}"
            )
            process.kill()
            process.join(KILL_WAIT_SEC)

    def _fail_doomed(self) -> set[str]:
        """Record FAILED, in their killed workers' names (only the owner may end a running
        invocation), the invocations :meth:`_doom` killed workers for; the ids done.
        A database error leaves the rest for the next call, before any reroute."""
        done: set[str] = set()
        for runner_id, doomed in list(self._doomed.items()):
            ctx = self.app.state_backend.get_runner_context(
                runner_id
            ) or self.runner_context.new_child_context(WORKER_CLS, runner_id=runner_id)
            for invocation_id, error in list(doomed.items()):
                if not fail_owned(self.app, invocation_id, error, ctx):
                    self.logger.info(
                        f"invocation:{invocation_id} of killed worker:{runner_id} had "
                        "finished or moved on: not failed"
                    )
                del doomed[invocation_id]
                done.add(invocation_id)
            del self._doomed[runner_id]
        return done

    @cached_property
    def _revoke_wake(self) -> RevokeWake:
        return RevokeWake(
            self.db_alias, self.app.app_id, enabled=bool(self.conf.django_listen_notify)
        )

    def _recover_lost_runners(self) -> None:
        """Put back the invocations of workers whose heartbeat is older than
        ``django_runner_dead_after_sec``: their runner host is gone (see
        :func:`~pynenc_django.ops.recovery.lost_invocations`).

        Every heartbeat interval, and only once this runner has reached the database
        without an error for that long: after an outage every heartbeat is old, and the
        other runners get that long to refresh theirs. Also reroutes invocations left
        KILLED that long (a reroute cut in half). Workers of this runner are left to
        :meth:`_recover_workers`.
        """
        dead_after = float(self.conf.django_runner_dead_after_sec)
        if dead_after <= 0:
            return
        now = time.monotonic()
        losses = recovery.connection_losses()  # retried silently, but an outage all the same
        if losses != self._seen_losses:
            self._seen_losses = losses
            self._db_healthy_since = now
        if now - self._last_sweep < float(self.conf.django_heartbeat_interval_sec):
            return
        if now - self._db_healthy_since < dead_after:
            return
        self._last_sweep = now
        with self._survive_database_errors("Could not look for the invocations of lost runners"):
            ours = [self.runner_id, *self.child_runner_ids, *self._unrecovered]
            lost = recovery.lost_invocations(
                self.app.app_id, self.db_alias, dead_after, self._runner_classes, ours
            )
            at = now_utc()
            revoked = {
                request.invocation_id: request
                for request in (
                    pending_revokes(self.app, self.db_alias, [f.invocation_id for f in lost])
                    if lost
                    else []
                )
            }
            for found in lost:
                if found.invocation_id in self._put_backs:
                    continue
                if found.owner is not None and found.invocation_id in revoked:
                    self.logger.warning(
                        f"invocation:{found.invocation_id} of lost worker:{found.owner} was "
                        "revoked: recording it FAILED instead of rerouting it"
                    )
                    owner_ctx = self.app.state_backend.get_runner_context(
                        found.owner
                    ) or self.runner_context.new_child_context(WORKER_CLS, runner_id=found.owner)
                    error = revoked[found.invocation_id].error(terminated=True)
                    fail_owned(self.app, found.invocation_id, error, owner_ctx)
                    continue
                if found.owner is None:  # KILLED, never rerouted
                    self.logger.warning(
                        f"Rerouting invocation:{found.invocation_id}, KILLED for over "
                        f"{dead_after:g}s without being rerouted"
                    )
                    put_back = PutBack(self.app, found.invocation_id, self.runner_context)
                    put_back.killed = True
                    self._put_backs[found.invocation_id] = put_back
                    continue
                self.logger.warning(
                    f"Recovering invocation:{found.invocation_id} ({found.status}) of lost "
                    f"worker:{found.owner} ({found.heartbeat_age(at)}; "
                    f"django_runner_dead_after_sec={dead_after:g}): rerouting it"
                )
                owner_ctx = self.app.state_backend.get_runner_context(
                    found.owner
                ) or self.runner_context.new_child_context(WORKER_CLS, runner_id=found.owner)
                self._put_backs[found.invocation_id] = PutBack(
                    self.app, found.invocation_id, owner_ctx, rerouted_by=self.runner_context
                )
            self._drain_put_backs()

    @contextmanager
    def _survive_database_errors(self, what: str) -> Iterator[None]:
        """Log a database error and carry on; the next loop iteration tries again."""
        try:
            yield
        except Exception as exc:
            if not is_database_error(exc):
                raise
            self.logger.warning(f"{what}: {exc}")
            self._db_healthy_since = time.monotonic()
            close_stale_connections(self.db_alias)

    def _report_child_runner_heartbeats(self) -> None:
        """Throttled (pynenc writes them every loop) and never fatal; the runner's own
        heartbeat too, which says whether a turn at the atomic services it holds is alive
        (:meth:`_check_atomic_services`)."""
        now = time.monotonic()
        if now - self._last_heartbeat < float(self.conf.django_heartbeat_interval_sec):
            return
        with self._survive_database_errors("Could not refresh worker heartbeats"):
            if self._atomic_service_every > 0:
                self.app.orchestrator.register_runner_heartbeats(
                    [self.runner_id], can_run_atomic_service=True, consumed_queues=self.conf.queues
                )
            super()._report_child_runner_heartbeats()
            self._last_heartbeat = now

    @cached_property
    def _atomic_service_every(self) -> float:
        return float(self.conf.django_atomic_service_every_sec)

    def _check_atomic_services(self) -> None:
        """The atomic services (trigger processing: cron ticks, events, status triggers)
        every ``django_atomic_service_every_sec`` cluster-wide, in whichever runner asks
        first (:meth:`DjangoOrchestrator.claim_atomic_service_turn
        <pynenc_django.orchestrator.atomic_service.AtomicServiceMixin.claim_atomic_service_turn>`);
        0 keeps pynenc's slots. A failure there is logged, never fatal: the run is recorded
        ABANDONED with the exception's type, and killing the runner loop as well would
        stop all of its workers.
        """
        try:
            if self._atomic_service_every > 0:
                self._take_atomic_service_turn()
            else:
                super()._check_atomic_services()
        except Exception as exc:
            self.logger.error(f"Atomic service check failed: {exc}")
            if is_database_error(exc):
                self._db_healthy_since = time.monotonic()
                close_stale_connections(self.db_alias)

    def _take_atomic_service_turn(self) -> None:
        """pynenc's ``_check_atomic_services`` with our claim instead of its slots; at once
        when trigger work was announced (:mod:`pynenc_django.wakeup.triggers`), for up to
        one interval until a turn starts."""
        now = time.monotonic()
        if self._trigger_wake.woken():
            self._urgent_until = now + self._atomic_service_every
        urgent = now < self._urgent_until
        if not urgent and (
            now - self._last_atomic_service_check_time < self._atomic_service_every
            or now < self._idle_until
        ):
            return
        self._last_atomic_service_check_time = now
        run = django_orchestrator(self.app).claim_atomic_service_turn(
            self.runner_context,
            every_sec=0.0 if urgent else self._atomic_service_every,
            holder_dead_after_sec=self._holder_dead_after,
        )
        if run is None:
            return
        self._urgent_until = 0.0
        self._idle_until = 0.0
        status, reason = AtomicServiceExecutionStatus.COMPLETED, ""
        try:
            with self._beating_meanwhile():
                self.app.trigger.trigger_loop_iteration(run)
            self._idle_until = time.monotonic() + self._idle_for()
        except BaseException as exc:
            status, reason = (
                AtomicServiceExecutionStatus.ABANDONED,
                f"exception:{type(exc).__name__}",
            )
            raise
        finally:
            django_orchestrator(self.app).finalize_atomic_service_turn(
                run, datetime.now(UTC), status, reason
            )

    _urgent_until = 0.0
    _idle_until = 0.0

    def _idle_for(self) -> float:
        """After a turn that found nothing to do: skip this runner's turns until the next
        cron tick, at most ``django_atomic_service_idle_sec``; announced trigger work
        still starts one at once. An idle cluster then costs a turn (about a dozen
        statements) every few seconds instead of every second."""
        bound = float(self.conf.django_atomic_service_idle_sec)
        idle_for = getattr(self.app.trigger, "idle_for_sec", None)
        if bound <= self._atomic_service_every or idle_for is None:
            return 0.0
        return min(bound, float(idle_for()))

    @contextmanager
    def _beating_meanwhile(self) -> Iterator[None]:
        """Keep this runner's heartbeats fresh while its loop is busy with a long turn:
        a turn outliving ``django_runner_dead_after_sec`` without them would be reaped as
        dead while it runs, and the next turn would overlap it. Short turns never write."""
        stop = threading.Event()
        interval = float(self.conf.django_heartbeat_interval_sec)

        def beat() -> None:
            while not stop.wait(interval):
                self._last_heartbeat = 0.0  # due now
                self._report_child_runner_heartbeats()

        thread = threading.Thread(target=beat, name="pynenc-turn-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    @cached_property
    def _trigger_wake(self) -> TriggerWake:
        return TriggerWake(
            self.db_alias, self.app.app_id, enabled=bool(self.conf.django_listen_notify)
        )

    @cached_property
    def _holder_dead_after(self) -> float:
        """A turn whose runner's heartbeat is older than this is over (the runner is dead):
        the runner-loss bound, ``django_runner_dead_after_sec``, or pynenc's 10 minutes
        where that recovery is off."""
        dead_after = float(self.conf.django_runner_dead_after_sec)
        if dead_after > 0:
            return dead_after
        return float(self.app.conf.runner_considered_dead_after_minutes) * 60

    # ------------------------------------------------------------------ stopping

    def stop_runner_loop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """First signal: stop gracefully. Second signal: kill the workers now."""
        if signum is not None:
            self._stop_signals += 1
            if self._stop_signals > 1:
                self.logger.warning(f"Received signal:{signum} again, forcing stop")
                self.forced_stop = True
                self.running = False
                for process in list(self.child_runner_ids.values()):
                    if process.is_alive():
                        process.kill()
                return
        grace = float(self.conf.django_shutdown_grace_sec)
        if signum is not None and grace > 0:
            self._shutdown_signum = signum
            self.logger.warning(
                f"Received signal:{signum}, stopping: running invocations have {grace:g}s "
                "to finish (send it again to force)"
            )
            self.running = False
            self._signal_stop()
            return
        super().stop_runner_loop(signum, frame)

    def _signal_stop(self) -> None:
        """Close the lifeline's write end: every worker reads EOF and stops taking work.

        Async-signal-safe enough for a signal handler: it only closes a file descriptor.
        Exactly one caller closes it: the loop, a signal handler interrupting it, and
        another thread (pynenc's tests stop runners from theirs) may all get here, and a
        second ``close`` of the descriptor could close one the process reused meanwhile.
        Taking the writer out of the instance is one atomic step under the GIL.
        """
        writer = self.__dict__.pop("_lifeline_writer", None)
        if writer is not None:
            writer.close()

    def _on_stop(self) -> None:
        try:
            self._wait_for_workers(
                0.0 if self.forced_stop else float(self.conf.django_shutdown_grace_sec)
            )
            self._terminate_all_processes()
        finally:
            self._unrecovered.update(self.child_runner_ids)
            self.child_runner_ids = {}
            if self._unrecovered or self._put_backs:
                self._recover_workers()
            with self._survive_database_errors("Could not remove this runner's heartbeats"):
                # Stopped cleanly: leave the atomic-service slot rotation now.
                gone = [self.runner_id, *sorted(self._spawned - self._unrecovered)]
                django_orchestrator(self.app).forget_runners(gone)
            if getattr(self, "_lifeline", None) is not None:
                self._lifeline.close()
            if "_work_announcer" in self.__dict__:
                self._work_announcer.stop()
            if "_trigger_wake" in self.__dict__:
                self._trigger_wake.close()
            if "_revoke_wake" in self.__dict__:
                self._revoke_wake.close()

    def _wait_for_workers(self, grace: float) -> None:
        """Up to ``grace`` seconds for the workers to finish, refreshing the heartbeats of
        those still running (otherwise live runners would take their invocations)."""
        self._signal_stop()
        deadline = time.monotonic() + grace
        for process in list(self.child_runner_ids.values()):
            while process.is_alive() and (left := deadline - time.monotonic()) > 0:
                process.join(min(left, 0.5))
                self._report_child_runner_heartbeats()
                self._enforce_time_limits()  # a finishing invocation keeps its limit

    def _terminate_all_processes(self) -> None:
        """SIGTERM (each worker reroutes its invocation), then SIGKILL after 5 s."""
        self._signal_stop()
        processes = list(self.child_runner_ids.items())
        for _, process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + 5
        for runner_id, process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                self.logger.warning(f"worker:{runner_id} did not stop, killing it")
                process.kill()
                process.join(1)
            self._unrecovered.add(runner_id)

    def _on_stop_runner_loop(self) -> None:
        self._signal_stop()
        self._terminate_all_processes()
        for runner_id in list(self.child_runner_ids):
            self.child_runner_ids.pop(runner_id, None)


def _startup_message(pipe: Connection) -> bytes:
    """What a worker said on its startup pipe (:class:`StartupReport`), if anything yet."""
    try:
        return pipe.recv_bytes() if pipe.poll() else b""
    except (EOFError, OSError):
        return b""  # it died without a word: before its first line of ours ran


def _early_deaths_message(deaths: int, exitcode: int | None, error: str) -> str:
    """Why the runner stops, and what to do about it."""
    said = f" ({error})" if error else ""
    text = (
        f"pynenc runner: {deaths} worker processes in a row died before they could take "
        f"work, the last with exit code {exitcode}{said}; stopping instead of respawning "
        "them forever."
    )
    if exitcode == UNGUARDED_MAIN_EXIT_CODE:
        main = getattr(sys.modules.get("__main__"), "__file__", None) or "manage.py"
        return (
            f"{text} Each worker re-ran the command: the main module {main} has no "
            '`if __name__ == "__main__":` guard, and the spawn start method imports it '
            "again in every worker process. Put its body under that guard, as Django's "
            "own manage.py does."
        )
    if not error:
        return f"{text} The worker's traceback, if it wrote one, is above."
    return text


def _reimporting_main() -> bool:
    """Whether this is a spawned process still importing its parent's main module (as
    ``__mp_main__``): where a runner is built only by a main module without a
    ``__name__ == "__main__"`` guard. (``_inheriting`` is how multiprocessing itself
    tells, for its own "bootstrapping phase" error.)"""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _exit_unguarded_main() -> NoReturn:
    """End this would-be worker at once, with an exit code its runner recognizes
    (:data:`UNGUARDED_MAIN_EXIT_CODE`), instead of building a runner in it: spawning
    workers from here raises multiprocessing's "bootstrapping phase" error."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(UNGUARDED_MAIN_EXIT_CODE)
