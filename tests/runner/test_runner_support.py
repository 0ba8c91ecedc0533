"""Backend guarantees the runner builds on: claims that survive a crash, a gate that a
runner's own lost finalization cannot jam, and the lookup of a dead worker's work."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.atomic_service import AtomicServiceExecutionStatus, AtomicServiceRun
from pynenc.runner.runner_context import RunnerContext

from tests import racers


def noop() -> None:
    """A module-level task body."""


def test_worker_killed_between_pop_and_pending_loses_nothing(app_instance: Pynenc) -> None:
    """pynenc's own loop deletes the message and marks PENDING in two steps; a worker
    dying in between loses the invocation forever. Ours commits both together."""
    invocation = app_instance.task(noop)()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=racers.claim_and_hang, args=(app_instance.app_id, ready))
    proc.start()
    try:
        assert ready.wait(60), "the claiming process never popped the message"
    finally:
        proc.kill()
        proc.join(10)

    assert app_instance.orchestrator.get_invocation_status(invocation.invocation_id) == (
        InvocationStatus.REGISTERED
    )
    claimed: list = []
    deadline = time.monotonic() + 30  # the server may take a moment to see the client die
    while not claimed and time.monotonic() < deadline:
        claimed = list(
            app_instance.orchestrator.get_invocations_to_run(
                1, RunnerContext("Survivor", runner_id="survivor")
            )
        )
        time.sleep(0.1)
    assert [i.invocation_id for i in claimed] == [invocation.invocation_id]
    record = app_instance.orchestrator.get_invocation_status_record(invocation.invocation_id)
    assert (record.status, record.runner_id) == (InvocationStatus.PENDING, "survivor")


def test_owned_invocations_are_found_by_runner(app_instance: Pynenc) -> None:
    mine, other, idle = (app_instance.task(noop)() for _ in range(3))
    ctx = RunnerContext("W", runner_id="worker-1")
    app_instance.orchestrator.set_invocation_status(
        mine.invocation_id, InvocationStatus.PENDING, ctx
    )
    app_instance.orchestrator.set_invocation_status(
        other.invocation_id, InvocationStatus.PENDING, RunnerContext("W", runner_id="worker-2")
    )

    owned = app_instance.orchestrator.get_owned_invocation_ids(["worker-1"])  # type: ignore[attr-defined]

    assert owned == [mine.invocation_id]
    assert idle.invocation_id not in owned


def test_a_runner_is_never_blocked_by_its_own_unfinalized_run(app_instance: Pynenc) -> None:
    """If finalizing a run fails (say the database went away), the runner's next claim
    supersedes it instead of finding the gate held by itself until heartbeats age."""
    orchestrator = app_instance.orchestrator
    first = AtomicServiceRun(runner_id="runner-a", atomic_service_run_id="run-1")
    second = AtomicServiceRun(runner_id="runner-a", atomic_service_run_id="run-2")
    orchestrator.register_runner_heartbeats(["runner-a"], True)

    assert orchestrator.record_atomic_service_execution_start(first, datetime.now(UTC))
    assert orchestrator.record_atomic_service_execution_start(second, datetime.now(UTC))

    active = orchestrator.get_active_atomic_service_executions()
    assert [e.atomic_service_run_id for e in active] == ["run-2"]
    executions = {
        e.atomic_service_run_id: e
        for e in orchestrator.get_atomic_service_executions_in_timerange(
            datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC)
        )
    }
    assert executions["run-1"].status == AtomicServiceExecutionStatus.ABANDONED
    assert "superseded" in executions["run-1"].reason


def test_another_runner_is_still_blocked_by_a_live_holder(app_instance: Pynenc) -> None:
    orchestrator = app_instance.orchestrator
    orchestrator.register_runner_heartbeats(["runner-a", "runner-b"], True)
    held = AtomicServiceRun(runner_id="runner-a", atomic_service_run_id="run-a")
    assert orchestrator.record_atomic_service_execution_start(held, datetime.now(UTC))

    blocked = AtomicServiceRun(runner_id="runner-b", atomic_service_run_id="run-b")
    assert not orchestrator.record_atomic_service_execution_start(blocked, datetime.now(UTC))


class _InterruptedClose(multiprocessing.connection.Connection):
    """A pipe end whose ``close`` is interrupted between closing the descriptor and
    forgetting it, by a stop request (a signal handler, or another thread's stop)."""

    on_close: Callable[[], None] = staticmethod(lambda: None)

    def _close(self, _close: Any = os.close) -> None:  # type: ignore[override]
        fd = self.fileno()
        _close(fd)
        type(self).on_close()


def test_the_lifeline_is_closed_exactly_once_however_stops_interleave(
    app_instance: Pynenc,
) -> None:
    """A second close of the lifeline's descriptor, after another caller closed it, raised
    EBADF in pynenc's combinations suite (its test thread and the runner loop stopping at
    once), and could close a descriptor the process had reused meanwhile."""
    from pynenc_django.runner import DjangoPersistentProcessRunner

    runner = DjangoPersistentProcessRunner(app_instance)
    reader, writer = multiprocessing.Pipe(duplex=False)
    interrupted = _InterruptedClose(os.dup(writer.fileno()), readable=False)
    writer.close()
    nested: list[BaseException | None] = []

    def stop_again() -> None:
        try:
            runner._signal_stop()
            nested.append(None)
        except BaseException as exc:  # what the nested stop raised, if anything
            nested.append(exc)

    _InterruptedClose.on_close = staticmethod(stop_again)
    runner._lifeline_writer = interrupted
    runner._signal_stop()
    runner._signal_stop()
    assert nested == [None], nested
    assert reader.poll(1) and _eof(reader), "the workers' end reads EOF"
    reader.close()


def _eof(reader: multiprocessing.connection.Connection) -> bool:
    try:
        reader.recv_bytes()
    except EOFError:
        return True
    return False
