"""Celery-style calling on a real ``manage.py pynenc_runner``: ``delay``/``apply_async``
with ``countdown``/``eta`` (delayed messages: not run before their time, taken when due by
a worker that slept until then), ``expires``, per-call ``queue`` and ``priority``, retry
backoff, ``get_result(timeout=...)`` and Django Tasks' ``run_after``.

Times come from the tasks' own records (``tests/project/jobs/calling.py``): what ran,
in which process, when."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus

from pynenc_django import get_result
from pynenc_django.exceptions import InvocationExpiredError, ResultTimeoutError
from tests.runner.conftest import Runners, describe, statuses, wait_all_success, wait_until

#: A worker asleep until a due time is woken by its timer, not by a poll: it starts the
#: invocation well before the 10 s safety poll would have looked (a functional bound on
#: the wake-up's mechanism, not a performance figure; see bench/ for latencies).
WOKEN_BY_TIMER_SEC = 5.0


def test_countdown_runs_once_no_earlier_than_due_on_a_sleeping_worker(
    app: Pynenc, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    runners.start(processes=2)
    record = str(tmp_path / "records.txt")
    time.sleep(0.5)  # both workers asleep, nothing queued
    before = time.time()
    invocation = calling.stamp.apply_async(args=("late", record), countdown=3)
    due = before + 3

    assert app.orchestrator.get_invocation_status(invocation.invocation_id) == (
        InvocationStatus.REGISTERED
    )
    assert app.broker.count_invocations() == 0, "a delayed invocation is not in its queue"
    due_at = app.broker.delayed_due_at(invocation.invocation_id)
    assert due_at is not None and abs(due_at.timestamp() - due) < 1.0
    assert get_result(invocation, timeout=60) == "late"

    (label, pid, started), *more = calling.records(record)
    assert not more, f"ran more than once: {calling.records(record)}"
    assert started >= due_at.timestamp(), f"started {due_at.timestamp() - started:.3f}s early"
    assert started - due_at.timestamp() < WOKEN_BY_TIMER_SEC, runners.diag()
    assert app.broker.delayed_due_at(invocation.invocation_id) is None


def test_many_due_at_one_instant_each_runs_exactly_once_across_runners(
    app: Pynenc, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    runners.start(processes=2)
    runners.start(processes=2)
    record = str(tmp_path / "records.txt")
    eta = datetime.now(UTC) + timedelta(seconds=3)
    invocations = [calling.stamp.apply_async(args=(f"n{i}", record), eta=eta) for i in range(120)]
    ids = [i.invocation_id for i in invocations]
    wait_all_success(app, ids, 120, runners.diag)

    runs = calling.records(record)
    labels = [label for label, _, _ in runs]
    assert sorted(labels) == sorted(f"n{i}" for i in range(120)), "each exactly once"
    assert min(t for _, _, t in runs) >= eta.timestamp(), "none before its eta"
    assert len({pid for _, pid, _ in runs}) > 1, "the workers shared them"


def test_a_parent_waiting_for_a_delayed_child_does_not_run_it_early(
    app: Pynenc, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    runners.start(processes=1)  # the parent's own worker is the only one: it runs waits
    record = str(tmp_path / "records.txt")
    parent = calling.waits_for_delayed(2.0, record)
    due = get_result(parent, timeout=60)
    ((label, _, started),) = calling.records(record)
    assert label == "child"
    assert started >= due, f"the child ran {due - started:.3f}s before its countdown"


def test_expired_before_start_fails_without_running(
    app: Pynenc, calling: ModuleType, tasks: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    record = str(tmp_path / "records.txt")
    expired = calling.stamp.apply_async(args=("expired", record), expires=0.5)
    kept = calling.stamp.apply_async(args=("kept", record), expires=600)
    time.sleep(1.0)
    runners.start(processes=1)
    wait_until(
        lambda: (
            statuses(app, [expired.invocation_id, kept.invocation_id])
            == {expired.invocation_id: "failed", kept.invocation_id: "success"}
        ),
        60,
        lambda: describe(app, [expired.invocation_id, kept.invocation_id]) + runners.diag(),
    )
    assert [label for label, _, _ in calling.records(record)] == ["kept"], "expired never ran"
    with pytest.raises(InvocationExpiredError, match="expired at .* it was not run"):
        _ = expired.result


def test_per_call_queue_and_priority_are_kept(app: Pynenc, calling: ModuleType) -> None:
    from pynenc_django.models import BrokerMessage, StateInvocation

    low = calling.stamp.apply_async(args=("low", "-"), priority=-5)
    high = calling.stamp.apply_async(args=("high", "-"), priority=7.5)
    rows = dict(
        BrokerMessage.objects.filter(app_id=app.app_id).values_list("invocation_id", "priority")
    )
    assert rows == {low.invocation_id: -5.0, high.invocation_id: 7.5}
    # The priority outlives the message: a reroute or a retry (another process, which
    # reads the invocation's row) queues it with the call's, not the task's.
    app.state_backend.store.invocations.clear()
    app.state_backend.store.options.clear()
    again = app.state_backend.get_invocation(high.invocation_id)
    assert app.orchestrator.route_of(again) == ("default", 7.5)
    stored = StateInvocation.objects.get(app_id=app.app_id, invocation_id=low.invocation_id)
    assert stored.call_options is not None and '"priority": -5.0' in stored.call_options


def test_bad_calls_are_refused_before_anything_is_stored(app: Pynenc, calling: ModuleType) -> None:
    from pynenc_django.models import DelayedMessage, StateInvocation

    naive = datetime.now() + timedelta(seconds=5)  # noqa: DTZ005 - the point of the test
    with pytest.raises(ValueError, match="naive"):
        calling.stamp.apply_async(args=("x", "-"), eta=naive)
    with pytest.raises(ValueError, match="countdown or eta"):
        calling.stamp.apply_async(args=("x", "-"), countdown=1, eta=datetime.now(UTC))
    with pytest.raises(ValueError, match="stamp: no runner can consume it"):
        calling.stamp.apply_async(args=("x", "-"), queue="nowhere")
    with pytest.raises(ValueError, match="finite"):
        calling.stamp.apply_async(args=("x", "-"), countdown=float("nan"))
    assert not StateInvocation.objects.filter(app_id=app.app_id).exists()
    assert not DelayedMessage.objects.filter(app_id=app.app_id).exists()


def test_retries_back_off_as_configured(
    app: Pynenc, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """``PYNENC["task"]["...flaky"]``: retry_backoff 1 s, no jitter: the second attempt
    waits at least 1 s, the third at least 2 s (pynenc alone: back to back)."""
    runners.start(processes=2)
    record = str(tmp_path / "records.txt")
    invocation = calling.flaky(2, record)
    assert get_result(invocation, timeout=60) == 3
    starts = [t for _, _, t in calling.records(record)]
    assert len(starts) == 3, calling.records(record)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0, f"gaps {gaps}"
    assert app.orchestrator.get_invocation_retries(invocation.invocation_id) == 2


def test_get_result_times_out_and_changes_nothing(
    app: Pynenc, calling: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    record = str(tmp_path / "records.txt")
    invocation = calling.stamp.delay("later", record)
    began = time.monotonic()
    with pytest.raises(ResultTimeoutError, match="did not finish within 0.5s.*registered"):
        get_result(invocation, timeout=0.5)
    assert 0.5 <= time.monotonic() - began < 5
    assert app.orchestrator.get_invocation_status(invocation.invocation_id) == (
        InvocationStatus.REGISTERED
    )
    runners.start(processes=1)
    assert get_result(invocation, timeout=60) == "later"


def test_django_task_run_after_is_delayed(app: Pynenc, tasks: ModuleType, runners: Runners) -> None:
    django_tasks = pytest.importorskip("django.tasks", reason="Django Tasks need Django >= 6")
    runners.start(processes=1)
    run_after = datetime.now(UTC) + timedelta(seconds=2)
    result = tasks.django_multiply.using(run_after=run_after).enqueue(3, 4)
    done = wait_until(
        lambda: (r := tasks.django_multiply.get_result(result.id)).is_finished and r,
        60,
        runners.diag,
    )
    assert done.status == django_tasks.TaskResultStatus.SUCCESSFUL
    assert done.return_value == 12
    assert done.started_at >= run_after, f"started {run_after - done.started_at} early"
