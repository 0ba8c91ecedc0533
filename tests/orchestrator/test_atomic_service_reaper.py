"""A RUNNING atomic-service execution left by a dead runner must not jam the cluster.

pynenc's own backends keep such a row forever, so after one crash inside the atomic
service every later claim is BLOCKED and triggers and recovery stop everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pynenc import Pynenc
from pynenc.orchestrator.atomic_service import AtomicServiceExecutionStatus, AtomicServiceRun

Status = AtomicServiceExecutionStatus


def _executions(app: Pynenc) -> dict[str, object]:
    now = datetime.now(UTC)
    found = app.orchestrator.get_atomic_service_executions_in_timerange(
        now - timedelta(hours=2), now + timedelta(minutes=1)
    )
    return {e.atomic_service_run_id: e for e in found}


def _age_heartbeat(app: Pynenc, runner_id: str, minutes: float) -> None:
    from pynenc_django.models import RunnerHeartbeat

    RunnerHeartbeat.objects.filter(app_id=app.app_id, runner_id=runner_id).update(
        last_heartbeat=datetime.now(UTC) - timedelta(minutes=minutes)
    )


def test_dead_holder_is_finalized_abandoned_and_the_next_claim_wins(app_instance: Pynenc) -> None:
    orchestrator = app_instance.orchestrator
    crashed = AtomicServiceRun(runner_id="crashed-runner", atomic_service_run_id="crashed-run")
    orchestrator.register_runner_heartbeats(["crashed-runner", "next-runner"], True)
    assert orchestrator.record_atomic_service_execution_start(crashed, None)
    dead_after = app_instance.conf.runner_considered_dead_after_minutes
    _age_heartbeat(app_instance, "crashed-runner", dead_after + 1)

    nxt = AtomicServiceRun(runner_id="next-runner", atomic_service_run_id="next-run")
    assert orchestrator.record_atomic_service_execution_start(nxt, None)

    executions = _executions(app_instance)
    assert executions["crashed-run"].status == Status.ABANDONED
    assert "crashed-runner" in executions["crashed-run"].reason
    assert executions["crashed-run"].end_time is not None
    assert [
        e.atomic_service_run_id for e in orchestrator.get_active_atomic_service_executions()
    ] == ["next-run"]


def test_live_holder_is_never_reaped(app_instance: Pynenc) -> None:
    orchestrator = app_instance.orchestrator
    holder = AtomicServiceRun(runner_id="live-runner", atomic_service_run_id="live-run")
    orchestrator.register_runner_heartbeats(["live-runner", "other-runner"], True)
    assert orchestrator.record_atomic_service_execution_start(holder, None)
    _age_heartbeat(app_instance, "live-runner", 1)  # late, but not dead

    other = AtomicServiceRun(runner_id="other-runner", atomic_service_run_id="other-run")
    assert not orchestrator.record_atomic_service_execution_start(other, None)

    executions = _executions(app_instance)
    assert executions["live-run"].status == Status.RUNNING
    assert executions["other-run"].status == Status.BLOCKED
    assert executions["other-run"].reason == "prior_running:live-run runner:live-runner"


def test_holder_without_heartbeat_is_reaped_only_once_old(app_instance: Pynenc) -> None:
    orchestrator = app_instance.orchestrator
    dead_after = timedelta(minutes=app_instance.conf.runner_considered_dead_after_minutes)
    ghost = AtomicServiceRun(runner_id="ghost", atomic_service_run_id="ghost-run")
    assert orchestrator.record_atomic_service_execution_start(
        ghost, datetime.now(UTC) - dead_after - timedelta(minutes=1)
    )
    young = AtomicServiceRun(runner_id="young", atomic_service_run_id="young-run")
    assert orchestrator.record_atomic_service_execution_start(young, None)
    assert _executions(app_instance)["ghost-run"].status == Status.ABANDONED


def test_finalize_after_reaping_keeps_the_first_terminal_status(app_instance: Pynenc) -> None:
    orchestrator = app_instance.orchestrator
    run = AtomicServiceRun(runner_id="slow-runner", atomic_service_run_id="slow-run")
    orchestrator.register_runner_heartbeats(["slow-runner"], True)
    assert orchestrator.record_atomic_service_execution_start(run, None)
    _age_heartbeat(
        app_instance, "slow-runner", app_instance.conf.runner_considered_dead_after_minutes + 1
    )
    assert orchestrator.record_atomic_service_execution_start(
        AtomicServiceRun(runner_id="r2", atomic_service_run_id="r2-run"), None
    )

    orchestrator.finalize_atomic_service_execution(run, datetime.now(UTC), Status.COMPLETED)

    executions = _executions(app_instance)
    assert executions["slow-run"].status == Status.ABANDONED
    assert executions["r2-run"].status == Status.RUNNING, "the new holder keeps the slot"


def test_a_claim_that_waited_for_the_gate_starts_after_the_previous_run_ended(
    app_instance: Pynenc,
) -> None:
    """pynenc's runner passes no start time, asking the backend to stamp the run at
    admission: a claim that waits for the holder's finalization starts after its end."""
    import threading
    import time

    from django.db import connections

    from pynenc_django.db import write_transaction
    from pynenc_django.models import AtomicServiceGate

    orchestrator = app_instance.orchestrator
    first = AtomicServiceRun(runner_id="first-runner", atomic_service_run_id="first-run")
    second = AtomicServiceRun(runner_id="second-runner", atomic_service_run_id="second-run")
    orchestrator.register_runner_heartbeats(["first-runner", "second-runner"], True)
    assert orchestrator.record_atomic_service_execution_start(first, None)
    accepted: list[bool] = []

    def claim() -> None:
        try:
            accepted.append(orchestrator.record_atomic_service_execution_start(second, None))
        finally:
            connections.close_all()

    with write_transaction("default"):  # the first run's finalization holds the gate row
        list(AtomicServiceGate.objects.select_for_update().filter(app_id=app_instance.app_id))
        claimer = threading.Thread(target=claim)
        claimer.start()
        time.sleep(0.5)  # the claim is waiting for the gate now
        orchestrator.finalize_atomic_service_execution(first, datetime.now(UTC), Status.COMPLETED)
    claimer.join(30)

    assert accepted == [True]
    executions = _executions(app_instance)
    assert executions["second-run"].start_time >= executions["first-run"].end_time, executions
