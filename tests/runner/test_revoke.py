"""``pynenc_django.revoke`` on a real ``manage.py pynenc_runner``: a queued and a delayed
invocation cancelled (never run), a running one terminated (its worker killed and
replaced, FAILED with the reason and the requester, never run again), and bad input.

What ran, where and how far comes from the tasks' own records
(``tests/project/jobs/limits.py``, ``calling.py``): ``<event> <pid> <time>`` lines."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest
from django.test import Client
from django.urls import reverse
from pynenc import Pynenc
from pynenc.exceptions import InvocationNotFoundError

from pynenc_django import get_result
from pynenc_django.calling import RevokeOutcome, revoke
from pynenc_django.exceptions import InvocationNotStoredError, InvocationRevokedError
from tests.runner.conftest import (
    RUNNING,
    Runners,
    create_times,
    describe,
    history,
    history_statuses,
    process_gone,
    statuses,
    wait_until,
)

#: Runners that look for revoke requests only every 30 s on their own: a terminate
#: handled well within that was woken by the request's announcement (NOTIFY, or the
#: signal file), not found by the periodic look. A functional bound, not a latency figure.
SLOW_LOOKS = {
    "PYNENC__DJANGO_HEARTBEAT_INTERVAL_SEC": "30",
    "PYNENC__DJANGO_RUNNER_DEAD_AFTER_SEC": "90",
}
ANNOUNCED_WITHIN_SEC = 10.0
FAILED = "failed"


def test_queued_and_delayed_invocations_are_cancelled_and_never_run(
    app: Pynenc, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    from pynenc_django.models import BrokerMessage, DelayedMessage, RevokeRequest

    record = str(tmp_path / "records.txt")
    queued = calling.stamp.delay("queued", record)
    delayed = calling.stamp.apply_async(args=("delayed", record), countdown=2)
    due = time.time() + 2

    done = revoke(queued, reason="duplicate order", requested_by="tester")
    assert (done.outcome, done.status) == (RevokeOutcome.CANCELLED, "registered")
    done = revoke(delayed.invocation_id, reason="customer left", requested_by="tester")
    assert (done.outcome, done.status) == (RevokeOutcome.CANCELLED, "registered")

    ids = [queued.invocation_id, delayed.invocation_id]
    assert statuses(app, ids) == {i: FAILED for i in ids}
    for model in (BrokerMessage, DelayedMessage, RevokeRequest):
        assert not model.objects.filter(app_id=app.app_id, invocation_id__in=ids).exists()
    with pytest.raises(InvocationRevokedError, match="revoked by tester: duplicate order; it"):
        _ = queued.result
    with pytest.raises(InvocationRevokedError, match="customer left; it had not started"):
        get_result(delayed, timeout=5)
    # The history names the requester (the runner context of a revoke), not a worker.
    trail = history(app, queued.invocation_id)
    assert [e.status for e in trail] == ["registered", "pending", RUNNING, FAILED]
    from pynenc_django.models import InvocationHistory, RunnerContextRecord

    contexts = InvocationHistory.objects.filter(
        app_id=app.app_id, invocation_id=queued.invocation_id
    ).values_list("runner_context_id", flat=True)
    assert list(contexts)[1:] == ["revoke:tester"] * 3
    assert RunnerContextRecord.objects.get(
        app_id=app.app_id, runner_id="revoke:tester"
    ).runner_cls == ("DjangoRevoke")
    assert revoke(queued).outcome == RevokeOutcome.ALREADY_FINAL

    # A worker running past the delayed one's due time runs neither: by the tasks' record.
    runners.start(processes=1)
    time.sleep(max(0.0, due + 0.5 - time.time()))
    assert get_result(calling.stamp.delay("marker", record), timeout=30) == "marker"
    assert [label for label, _, _ in calling.records(record)] == ["marker"]

    # The admin's invocation page shows who revoked it and the error.
    from django.contrib.auth.models import User

    from pynenc_django.models import Invocation

    user = User.objects.create_superuser(f"revoke-{uuid.uuid4().hex[:10]}", password="pw")
    try:
        client = Client()
        client.force_login(user)
        pk = Invocation.objects.get(app_id=app.app_id, invocation_id=queued.invocation_id).pk
        html = client.get(reverse("admin:pynenc_django_invocation_change", args=[pk]))
        page = html.content.decode()
    finally:
        user.delete()
    assert html.status_code == 200
    assert "DjangoRevoke <code>revoke:tester</code>" in page
    assert "InvocationRevokedError" in page and "duplicate order" in page


def test_a_running_invocation_is_terminated_and_its_worker_replaced(
    app: Pynenc, calling: ModuleType, limits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    from pynenc_django.models import RevokeRequest

    runner = runners.start(processes=1, env=SLOW_LOOKS)
    ((old_pid, worker_id),) = runner.workers().items()
    created = create_times([old_pid])[old_pid]
    record = str(tmp_path / "records.txt")
    invocation = limits.sleeper(30, record)
    wait_until(lambda: calling.records(record), 30, runners.diag)  # it started

    kept = revoke(invocation, reason="not needed")
    assert kept.outcome == RevokeOutcome.NOT_TERMINATED
    assert statuses(app, [invocation.invocation_id]) == {invocation.invocation_id: RUNNING}

    asked = time.monotonic()
    done = revoke(invocation, terminate=True, reason="customer cancelled", requested_by="ops")
    assert (done.outcome, done.status) == (RevokeOutcome.TERMINATING, RUNNING)
    with pytest.raises(
        InvocationRevokedError,
        match=r"revoked by ops: customer cancelled; it was stopped while running \(its worker",
    ):
        get_result(invocation, timeout=30)
    assert time.monotonic() - asked < ANNOUNCED_WITHIN_SEC, runners.diag()

    assert process_gone(old_pid, created), f"worker pid {old_pid} still runs"
    ((event, pid, _),) = calling.records(record)  # started once, never finished or rerun
    assert (event, pid) == ("start", old_pid)
    trail = history_statuses(app, invocation.invocation_id)
    assert trail[trail.index(RUNNING) :] == [RUNNING, FAILED], describe(
        app, [invocation.invocation_id]
    )
    assert history(app, invocation.invocation_id)[-1].runner_id is None  # FAILED frees it
    assert not RevokeRequest.objects.filter(app_id=app.app_id).exists()
    assert runner.wait_for_log(f"Killing worker:{worker_id} pid:{old_pid}")

    # A new worker took its place, and runs the next task.
    marker = str(tmp_path / "marker.txt")
    assert get_result(calling.stamp.delay("next", marker), timeout=60) == "next"
    ((_, new_pid, _),) = calling.records(marker)
    assert new_pid != old_pid and new_pid in runner.workers(), runner.workers()
    time.sleep(0.5)  # nothing runs it again behind our back
    assert len(calling.records(record)) == 1
    assert revoke(invocation, terminate=True).outcome == RevokeOutcome.ALREADY_FINAL


def test_terminating_a_run_nested_in_a_wait_reroutes_the_waiting_one(
    app: Pynenc, calling: ModuleType, limits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """One worker: the child runs inside its parent's wait. Terminating the child kills
    the worker; the child ends FAILED, the parent is put back (KILLED, REROUTED) as after
    any worker death, and the new worker runs it again, with a new child."""
    from pynenc_django.models import StateInvocation

    runner = runners.start(processes=1)
    ((old_pid, _),) = runner.workers().items()
    record = str(tmp_path / "records.txt")
    parent = limits.parent_of_sleeper(record)
    wait_until(
        lambda: [event for event, _, _ in calling.records(record)] == ["parent-start", "start"],
        30,
        runners.diag,
    )
    child_id = StateInvocation.objects.get(
        app_id=app.app_id, parent_invocation_id=parent.invocation_id
    ).invocation_id
    assert revoke(child_id, terminate=True, requested_by="ops").outcome == (
        RevokeOutcome.TERMINATING
    )

    assert get_result(parent, timeout=60) == "slept"
    runs = calling.records(record)
    assert [event for event, _, _ in runs] == [
        "parent-start",
        "start",
        "parent-start",
        "start",
        "finish",
    ]
    assert {pid for _, pid, _ in runs[:2]} == {old_pid}
    (new_pid,) = {pid for _, pid, _ in runs[2:]}
    assert new_pid != old_pid and new_pid in runner.workers()
    assert statuses(app, [child_id]) == {child_id: FAILED}
    trail = history_statuses(app, parent.invocation_id)
    first_run = trail.index(RUNNING)
    assert trail[first_run : first_run + 3] == [RUNNING, "killed", "rerouted"], trail
    assert trail[-1] == "success"


def test_a_runner_cancels_a_requested_invocation_found_back_in_its_queue(
    app: Pynenc, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """A revoke request stored while the invocation was between statuses (here written
    directly: a delayed invocation no worker can take for a minute) is carried out by the
    runner's first look, with the requester's context; the invocation never runs."""
    from pynenc_django.models import DelayedMessage, RevokeRequest
    from pynenc_django.utils import now_utc

    record = str(tmp_path / "records.txt")
    invocation = calling.stamp.apply_async(args=("late", record), countdown=60)
    RevokeRequest.objects.create(
        app_id=app.app_id,
        invocation_id=invocation.invocation_id,
        reason="put back",
        requested_by="ops",
        requested_at=now_utc(),
    )
    runners.start(processes=1)
    with pytest.raises(InvocationRevokedError, match="revoked by ops: put back; it had not"):
        get_result(invocation, timeout=30)
    assert not DelayedMessage.objects.filter(app_id=app.app_id).exists()
    assert not RevokeRequest.objects.filter(app_id=app.app_id).exists()
    from pynenc_django.models import InvocationHistory

    last = InvocationHistory.objects.filter(
        app_id=app.app_id, invocation_id=invocation.invocation_id
    ).latest("timestamp")
    assert (last.status, last.runner_context_id) == (FAILED, "revoke:ops")
    assert calling.records(record) == []


def test_a_running_invocation_of_another_kind_of_runner_is_not_asked(
    app: Pynenc, calling: ModuleType
) -> None:
    """Only pynenc_runner's workers can be told: an invocation a ThreadRunner runs is
    left alone, and no request is stored."""
    import os
    import socket
    import threading

    from pynenc.invocation.status import InvocationStatus
    from pynenc.runner.runner_context import RunnerContext

    from pynenc_django.models import RevokeRequest

    invocation = calling.stamp.delay("elsewhere", "-")
    ctx = RunnerContext(
        runner_cls="ThreadRunner",
        runner_id=f"thread-runner-{uuid.uuid4().hex[:8]}",
        pid=os.getpid(),
        hostname=socket.gethostname(),
        thread_id=threading.get_ident(),
        parent_ctx=None,
    )
    for status in (InvocationStatus.PENDING, InvocationStatus.RUNNING):
        app.orchestrator.set_invocation_status(invocation.invocation_id, status, ctx)

    done = revoke(invocation, terminate=True)
    assert (done.outcome, done.status) == (RevokeOutcome.NOT_TERMINATED, RUNNING)
    assert "(ThreadRunner) is not a worker of pynenc_runner" in done.detail
    assert not RevokeRequest.objects.filter(app_id=app.app_id).exists()
    assert statuses(app, [invocation.invocation_id]) == {invocation.invocation_id: RUNNING}


def test_bad_input_is_refused_and_changes_nothing(app: Pynenc, calling: ModuleType) -> None:
    from pynenc_django.models import RevokeRequest

    with pytest.raises(InvocationNotStoredError, match="no invocation with this id") as raised:
        revoke("no-such-invocation", terminate=True)
    assert isinstance(raised.value, InvocationNotFoundError)  # pynenc's own error
    invocation = calling.stamp.delay("kept", "-")
    with pytest.raises(ValueError, match="requested_by=''"):
        revoke(invocation, requested_by="")
    with pytest.raises(ValueError, match="at most 200"):
        revoke(invocation, requested_by="x" * 201)
    with pytest.raises(ValueError, match="reason must be a string"):
        revoke(invocation, reason=42)  # type: ignore[arg-type]
    assert statuses(app, [invocation.invocation_id]) == {invocation.invocation_id: "registered"}
    assert not RevokeRequest.objects.filter(app_id=app.app_id).exists()
