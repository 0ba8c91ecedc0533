"""``DjangoPersistentProcessRunner``: pynenc's PersistentProcessRunner, fit for Django.

What it changes, and why (pynenc's own runner does none of this):

* **Workers start Django first.** A spawned worker runs ``django.setup()`` before the app
  (and so the user's task modules) is unpickled; task modules may import models.
* **Idle workers wait, they do not poll.** See :mod:`pynenc_django.wakeup`.
* **At-least-once delivery.** The broker pop and the PENDING transition commit together
  (:meth:`DjangoOrchestrator.get_additional_invocations_to_run`); when a worker dies the
  runner reroutes what it held at once instead of waiting for heartbeats to age.
* **Workers do not outlive their runner.** A worker whose runner died finishes its
  current invocation (keeping its own heartbeat fresh meanwhile) and exits.
* **Database outages are survived.** Connections are recycled around every invocation
  (``close_old_connections``, honouring ``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS``);
  database errors in the loops are logged and retried with backoff, never fatal; an
  invocation interrupted by one is rerouted once the database is back.
* **Graceful stop.** The first SIGTERM/SIGINT stops taking work, lets running
  invocations finish for ``django_shutdown_grace_sec`` and reroutes the rest; a second
  signal kills the workers at once and the runner reroutes their invocations.
* No ``multiprocessing.Manager`` server process, and the spawn start method is used
  for our workers only, not forced on the whole process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc import context
from pynenc.runner.persistent_process_runner import PersistentProcessRunner
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.conf import ConfigDjangoPersistentProcessRunner
from pynenc_django.planner import FirstAnalyze
from pynenc_django.wakeup import ResultWaiter, result_waiter

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from types import FrameType

    from pynenc.app import Pynenc
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.invocation.dist_invocation import DistributedInvocation

logger = logging.getLogger("pynenc_django")

SPAWN = multiprocessing.get_context("spawn")
WORKER_CLS = "PPRWorker"  # the runner class name pynenc records for worker contexts
# Backoff bounds while the database is unreachable.
DB_RETRY_MIN_SEC = 0.2
DB_RETRY_MAX_SEC = 5.0


def is_database_error(exc: BaseException) -> bool:
    from django.db import Error  # InterfaceError, OperationalError, ... derive from it

    return isinstance(exc, Error)


def close_stale_connections() -> None:
    """Between idle polls and after database errors: close connections that are broken or
    past ``CONN_MAX_AGE``; Django reopens them lazily.

    ``CONN_MAX_AGE = 0`` means "one connection per request"; an idle poll is no request,
    so such connections are only renewed around invocations, not every second.
    """
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        expired = conn.close_at is not None and time.monotonic() >= conn.close_at
        if (expired and conn.settings_dict["CONN_MAX_AGE"] != 0) or (
            conn.errors_occurred and not conn.is_usable()
        ):
            conn.close()


def recycle_connections() -> None:
    """Django's per-request connection hygiene, applied per invocation."""
    from django.db import close_old_connections

    close_old_connections()


def worker_main(
    app_pickle: bytes,
    *,
    lifeline: Connection,
    parent_runner_ctx_json: str,
    child_runner_id: str,
    parent_pid: int,
) -> None:
    """Entry point of a spawned worker process.

    ``lifeline`` is the read end of a pipe only the runner can write to: it reads EOF
    when the runner asks its workers to stop *or* dies, with no shared lock that a
    killed process could leave held (a ``multiprocessing.Event`` can).
    """
    from pynenc_django.db import ensure_django

    # Ctrl-C reaches the whole process group; the runner decides how its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ensure_django()  # before the app is unpickled: task modules may import models
    app: Pynenc = pickle.loads(app_pickle)
    runner = DjangoPersistentProcessRunner(app)
    parent_ctx = RunnerContext.from_json(parent_runner_ctx_json)
    ctx = parent_ctx.new_child_context(WORKER_CLS, runner_id=child_runner_id)
    _Worker(app, runner, ctx, lifeline, parent_pid).run()


class _Worker:
    """The loop of one worker process: claim, run, wait; survive the database going away."""

    def __init__(
        self,
        app: Pynenc,
        runner: DjangoPersistentProcessRunner,
        ctx: RunnerContext,
        lifeline: Connection,
        parent_pid: int,
    ) -> None:
        self.app = app
        self.runner = runner
        self.conf = runner.conf
        self.ctx = ctx
        self.lifeline = lifeline
        self.stop_event = threading.Event()  # set by the watchdog when the lifeline ends
        self.parent_pid = parent_pid
        self.invocation_id: InvocationId | None = None
        self.orphaned = threading.Event()
        self.terminating = False
        self.done = threading.Event()
        self._db_backoff = DB_RETRY_MIN_SEC

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set() or self.orphaned.is_set()

    def run(self) -> None:
        from pynenc_django.wakeup import make_waiter

        signal.signal(signal.SIGTERM, self._on_sigterm)
        watchdog = threading.Thread(target=self._watch_runner, name="pynenc-watchdog", daemon=True)
        watchdog.start()
        waiter = make_waiter(
            self.runner.db_alias,
            self.app.app_id,
            self.stop_event,
            min_wait=float(self.conf.runner_loop_sleep_time_sec),
            max_wait=float(self.conf.django_idle_wait_max_sec),
            notified_max_wait=float(self.conf.django_notify_safety_poll_sec),
            listen=bool(self.conf.django_listen_notify),
        )
        try:
            orchestrator = self.app.orchestrator
            if hasattr(orchestrator, "blocking_check_interval"):
                orchestrator.blocking_check_interval = float(
                    self.conf.django_blocking_check_interval_sec
                )
            if hasattr(orchestrator, "claims_run_at_once"):
                orchestrator.claims_run_at_once = True  # each claim runs at once, here
            self._with_db_retries(lambda: self.runner._register_new_child_runner_context(self.ctx))
            context.set_runner_context(self.app.app_id, self.ctx)
            self.app.logger.info(f"Persistent process worker started with pid:{os.getpid()}")
            waiter.start()
            while not self.stopping:
                invocation = self._claim(announced=waiter.woken)
                if invocation is None:
                    close_stale_connections()
                    waiter.wait()
                    continue
                waiter.found_work()
                drained = getattr(self.app.orchestrator, "claimed_the_last_message", False)
                self._run(invocation)
                if drained and waiter.wakes:
                    # It was the queue's only message: what was enqueued since has been
                    # announced (the wait returns at once), so look when woken; or, where
                    # only this host's enqueues are (MariaDB), after the shortest sleep.
                    waiter.wait()
        except KeyboardInterrupt:
            self.app.logger.info(f"worker:{self.ctx.runner_id} interrupted, exiting")
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.done.set()
            if self.invocation_id is not None:
                self.app.logger.warning(
                    f"worker:{self.ctx.runner_id} stopping during "
                    f"invocation:{self.invocation_id}, rerouting it"
                )
                self._reroute(self.invocation_id)
            waiter.close()
            self.app.logger.info(f"worker:{self.ctx.runner_id} shutting down")

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """Stop now. A running invocation is interrupted (``run`` reroutes it); otherwise
        only flag it, so no database call or lock is cut in half."""
        self.app.logger.warning(f"worker:{self.ctx.runner_id} received signal:{signum}, stopping")
        self.terminating = True
        self.stop_event.set()
        if self.invocation_id is not None:
            raise KeyboardInterrupt

    def _claim(self, announced: bool) -> DistributedInvocation | None:
        """One invocation or none; ``announced``: the waiter was just woken for new work,
        so the claim may skip its look at the queue."""
        orchestrator = self.app.orchestrator
        orchestrator.claimed_the_last_message = False  # type: ignore[attr-defined]
        orchestrator.work_announced = announced  # type: ignore[attr-defined]
        try:
            found = list(
                self.app.orchestrator.get_invocations_to_run(
                    1,
                    self.ctx,
                    queue_provider=self.runner.queue_names_for_retrieval,
                    on_queue_retrieved=self.runner.note_queue_retrieved,
                )
            )
        except Exception as exc:
            if not is_database_error(exc):
                raise
            self._database_unavailable(exc)
            return None
        self._db_backoff = DB_RETRY_MIN_SEC
        return found[0] if found else None

    def _run(self, invocation: DistributedInvocation) -> None:
        self.invocation_id = invocation.invocation_id
        if self.terminating:  # SIGTERM arrived while claiming: hand it back untouched
            raise KeyboardInterrupt
        recycle_connections()
        try:
            invocation.run(self.ctx)
        except Exception:
            # pynenc records a task's own exceptions itself; reaching here means the
            # result could not be stored (typically the database went away).
            self.app.logger.exception(f"Error executing invocation:{self.invocation_id}")
            self._reroute(self.invocation_id)
        # Not in a ``finally``: an interrupted invocation must stay known to ``run``,
        # which reroutes it.
        self.invocation_id = None
        recycle_connections()

    def _reroute(self, invocation_id: InvocationId) -> None:
        """KILLED then REROUTED, retried until the database answers; a no-op if final."""
        self._with_db_retries(
            lambda: self.runner._kill_and_reroute(invocation_id, runner_ctx=self.ctx),
            give_up_after=float(self.conf.django_reroute_timeout_sec),
        )

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
            f"worker:{self.ctx.runner_id} database unavailable ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
            f"retrying in {self._db_backoff:.1f}s"
        )
        close_stale_connections()
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
        beat_every = float(self.conf.django_heartbeat_interval_sec)
        while not self.done.wait(beat_every):
            if self.invocation_id is None:
                continue
            try:
                self.app.orchestrator.register_runner_heartbeats([self.ctx.runner_id])
            except Exception as exc:  # the next round retries
                self.app.logger.warning(f"worker heartbeat failed: {exc}")


class DjangoPersistentProcessRunner(PersistentProcessRunner):
    """A fixed pool of spawned worker processes; see the module docstring."""

    def __init__(
        self,
        app: Pynenc,
        runner_cache: dict | None = None,
        runner_context: RunnerContext | None = None,
    ) -> None:
        self.forced_stop = False
        self._stop_signals = 0
        self._last_heartbeat = 0.0
        self._unrecovered: set[str] = set()
        self._spawned: set[str] = set()
        super().__init__(app, runner_cache, runner_context)
        self._first_analyze = FirstAnalyze(self.db_alias)

    @cached_property
    def conf(self) -> ConfigDjangoPersistentProcessRunner:  # type: ignore[override]
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
        self._result_waiter.wait(list(result_invocation_ids))

    @cached_property
    def _result_waiter(self) -> ResultWaiter:
        return result_waiter(
            self.db_alias,
            max_wait=float(self.conf.invocation_wait_results_sleep_time_sec),
            listen=bool(self.conf.django_listen_notify),
        )

    def _on_start(self) -> None:
        from pynenc_django.db import ensure_django

        ensure_django()
        self.num_processes = max(
            self.conf.min_parallel_slots, self.conf.num_processes or os.cpu_count() or 1
        )
        self.logger.info(f"Creating {self.num_processes} worker processes")
        self.child_runner_ids = {}
        self.runner_cache = self._runner_cache if self._runner_cache is not None else {}
        self.stop_event = None  # pynenc's Manager event; our workers use the lifeline
        self._lifeline, self._lifeline_writer = SPAWN.Pipe(duplex=False)
        for _ in range(self.num_processes):
            self._spawn_persistent_process()

    def _spawn_persistent_process(self) -> str | None:
        if not self.running:
            raise RuntimeError("Trying to spawn new process after stopping loop")
        child_runner_id = str(uuid.uuid4())
        process = SPAWN.Process(
            target=worker_main,
            kwargs={
                "app_pickle": pickle.dumps(self.app),
                "lifeline": self._lifeline,
                "parent_runner_ctx_json": self.runner_context.to_json(),
                "child_runner_id": child_runner_id,
                "parent_pid": os.getpid(),
            },
            daemon=True,
            name=f"pynenc-worker-{child_runner_id[:8]}",
        )
        process.start()
        self.child_runner_ids[child_runner_id] = process
        self._spawned.add(child_runner_id)
        self.logger.info(f"Spawned worker pid:{process.pid} worker:{child_runner_id}")
        return child_runner_id

    def runner_loop_iteration(self) -> None:
        """Reap dead workers (rerouting what they held), respawn, retry pending recoveries;
        give new tables their first statistics (:mod:`pynenc_django.planner`)."""
        for runner_id, process in list(self.child_runner_ids.items()):
            if process.is_alive():
                continue
            self.child_runner_ids.pop(runner_id, None)
            self.logger.warning(
                f"worker:{runner_id} pid:{process.pid} exited with code {process.exitcode}"
            )
            self._unrecovered.add(runner_id)
        if self._unrecovered:
            self._recover_workers()
        while self.running and len(self.child_runner_ids) < self.num_processes:
            self._spawn_persistent_process()
        self._first_analyze.tick()

    def _recover_workers(self) -> None:
        """Reroute every invocation still held by workers that are gone."""
        with self._survive_database_errors("Could not reroute dead workers' invocations yet"):
            for runner_id in sorted(self._unrecovered):
                held = self.app.orchestrator.get_owned_invocation_ids([runner_id])  # type: ignore[attr-defined]
                ctx = self.runner_context.new_child_context(WORKER_CLS, runner_id=runner_id)
                for invocation_id in held:
                    self.logger.warning(
                        f"Rerouting invocation:{invocation_id} of dead worker:{runner_id}"
                    )
                    self._kill_and_reroute(invocation_id, runner_ctx=ctx)
                self._unrecovered.discard(runner_id)

    @contextmanager
    def _survive_database_errors(self, what: str) -> Iterator[None]:
        """Log a database error and carry on; the next loop iteration tries again."""
        try:
            yield
        except Exception as exc:
            if not is_database_error(exc):
                raise
            self.logger.warning(f"{what}: {exc}")
            close_stale_connections()

    def _report_child_runner_heartbeats(self) -> None:
        """Throttled (pynenc writes them every loop) and never fatal."""
        now = time.monotonic()
        if now - self._last_heartbeat < float(self.conf.django_heartbeat_interval_sec):
            return
        with self._survive_database_errors("Could not refresh worker heartbeats"):
            super()._report_child_runner_heartbeats()
            self._last_heartbeat = now

    def _check_atomic_services(self) -> None:
        """pynenc's atomic-service turn; a failure there is logged, never fatal.

        pynenc has already recorded the run as ABANDONED with the exception's type when
        it gets here; killing the runner loop as well would stop all of its workers.
        """
        try:
            super()._check_atomic_services()
        except Exception as exc:
            self.logger.error(f"Atomic service check failed: {exc}")
            if is_database_error(exc):
                close_stale_connections()

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
        """
        writer = getattr(self, "_lifeline_writer", None)
        if writer is not None and not writer.closed:
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
            if self._unrecovered:
                self._recover_workers()
            with self._survive_database_errors("Could not remove this runner's heartbeats"):
                # Stopped cleanly: leave the atomic-service slot rotation now.
                gone = [self.runner_id, *sorted(self._spawned - self._unrecovered)]
                self.app.orchestrator.forget_runners(gone)  # type: ignore[attr-defined]
            if getattr(self, "_lifeline", None) is not None:
                self._lifeline.close()

    def _wait_for_workers(self, grace: float) -> None:
        self._signal_stop()
        deadline = time.monotonic() + grace
        for process in list(self.child_runner_ids.values()):
            process.join(max(0.0, deadline - time.monotonic()))

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
