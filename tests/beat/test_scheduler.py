"""The evaluator on the real database: django-celery-beat rows in, pynenc invocations out.

Each test calls :func:`run_due_periodic_tasks` with the times it needs (as the atomic
service would, every second) and checks the periodic task's row, its
``PeriodicTaskRun`` rows and the invocations pynenc stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pynenc import Pynenc

from pynenc_django.beat.models import PeriodicTaskRun
from pynenc_django.beat.scheduler import MAX_COUNTED, run_due_periodic_tasks
from tests.beat.conftest import ADD

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
RUN_ID = "atomic-run-1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def evaluate(app: Pynenc, now: datetime) -> int:
    return run_due_periodic_tasks(app, now, RUN_ID)


def runs(periodic_task: Any) -> list[PeriodicTaskRun]:
    return list(PeriodicTaskRun.objects.filter(periodic_task=periodic_task).order_by("due_at"))


def stored_invocations(app: Pynenc, task_key: str = ADD) -> set[str]:
    from pynenc_django.models import Invocation

    rows = Invocation.objects.for_app(app.app_id).filter(task_id_key=task_key)
    return set(rows.values_list("invocation_id", flat=True))


def on_beat_queue(x: int) -> int:
    """Registered on its own queue by :func:`beat_queue`."""
    return x


@pytest.fixture
def beat_queue(app: Pynenc) -> Generator[str, None, None]:
    """A registered task declaring queue ``beat-q`` (so pynenc knows that queue),
    unregistered afterwards: later check tests must not see it."""
    task = app.task(queue="beat-q")(on_beat_queue)
    yield "beat-q"
    app._tasks.pop(task.task_id, None)


def test_interval_fires_each_due_time_once_and_keeps_the_counters(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    every_10s = periodic("every 10s", every=10, last_run_at=T0)

    assert evaluate(app, at(5)) == 0
    assert evaluate(app, at(10.5)) == 1
    assert evaluate(app, at(10.5)) == 0, "the same due time is never fired twice"

    [run] = runs(every_10s)
    assert (run.due_at, run.fired_at, run.reason, run.missed) == (at(10), at(10.5), "schedule", 0)
    assert run.late_by_sec == pytest.approx(0.5)
    assert (run.periodic_task_name, run.task_name) == ("every 10s", ADD)
    assert run.atomic_service_run_id == RUN_ID
    invocation = app.state_backend.get_invocation(run.invocation_id)
    assert invocation.call.arguments.kwargs == {"x": 1, "y": 2}
    every_10s.refresh_from_db()
    assert (every_10s.last_run_at, every_10s.total_run_count) == (at(10), 1)

    assert evaluate(app, at(21)) == 1
    every_10s.refresh_from_db()
    assert (every_10s.last_run_at, every_10s.total_run_count) == (at(20), 2)
    assert [r.due_at for r in runs(every_10s)] == [at(10), at(20)]
    assert stored_invocations(app) == {r.invocation_id for r in runs(every_10s)}


def test_positional_args_are_bound_to_the_function(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    periodic("args", every=10, last_run_at=T0, args="[3]", kwargs='{"y": 4}')
    assert evaluate(app, at(10)) == 1
    [run] = PeriodicTaskRun.objects.all()
    assert app.state_backend.get_invocation(run.invocation_id).call.arguments.kwargs == {
        "x": 3,
        "y": 4,
    }


def test_crontab_counts_in_its_own_timezone_across_daylight_saving(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    """09:00 in Madrid is 08:00 UTC in winter and 07:00 UTC from 29 March 2026 (CEST)."""
    crontab = {"minute": "0", "hour": "9", "timezone": "Europe/Madrid"}
    last = datetime(2026, 3, 28, 8, 0, tzinfo=UTC)  # Saturday 09:00 CET
    nine_cet = periodic("09:00 Madrid", crontab=crontab, last_run_at=last)

    assert evaluate(app, datetime(2026, 3, 29, 6, 59, 50, tzinfo=UTC)) == 0
    assert evaluate(app, datetime(2026, 3, 29, 7, 0, 20, tzinfo=UTC)) == 1
    [run] = runs(nine_cet)
    assert run.due_at == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    assert (run.reason, run.missed) == ("schedule", 0)
    assert run.late_by_sec == pytest.approx(20)


def test_crontab_without_last_run_at_starts_after_date_changed(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    crontab = {"minute": "*/15", "hour": "*", "timezone": "UTC"}
    quarterly = periodic("every 15 min", crontab=crontab, date_changed=at(-5 * 60))

    assert evaluate(app, at(-1)) == 0
    assert evaluate(app, at(2)) == 1
    assert [r.due_at for r in runs(quarterly)] == [T0]


def test_interval_without_last_run_at_runs_one_period_after_date_changed(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    fresh = periodic("fresh", every=10, date_changed=T0)
    assert evaluate(app, at(9)) == 0
    assert evaluate(app, at(10.2)) == 1
    assert [r.due_at for r in runs(fresh)] == [at(10)]


def test_nothing_before_start_time(app: Pynenc, tasks: Any, periodic: Callable[..., Any]) -> None:
    interval = periodic("interval", every=10, date_changed=T0, start_time=at(100))
    crontab = periodic(
        "minutely",
        crontab={"minute": "*", "timezone": "UTC"},
        date_changed=at(-3600),
        start_time=at(30),
    )
    moved = periodic("moved", every=10, last_run_at=T0, start_time=at(300))

    assert evaluate(app, at(50)) == 0
    assert evaluate(app, at(60.5)) == 1  # the crontab's first minute from its start time
    assert [r.due_at for r in runs(crontab)] == [at(60)]
    assert evaluate(app, at(100.5)) == 1  # the interval runs at its start time
    assert [r.due_at for r in runs(interval)] == [at(100)]
    assert runs(moved) == []
    # moved: its first due time is its start; the others, not evaluated since, each have
    # one late run for what was missed and one run per due time still within its 60 s.
    assert evaluate(app, at(300.5)) == 1 + (1 + 6) + (1 + 1)
    assert [r.due_at for r in runs(moved)] == [at(300)]
    assert [(r.reason, r.due_at) for r in runs(crontab)][1:] == [
        ("late", at(240)),
        ("schedule", at(300)),
    ]


def test_one_off_runs_once_then_is_disabled(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    once = periodic("once", every=10, last_run_at=T0, one_off=True)
    clocked = periodic("clocked", clocked=at(5))

    assert evaluate(app, at(4)) == 0
    assert evaluate(app, at(10.1)) == 2
    for periodic_task in (once, clocked):
        periodic_task.refresh_from_db()
        assert not periodic_task.enabled, "one_off: disabled by its run"
        assert periodic_task.total_run_count == 1
    assert [r.due_at for r in runs(clocked)] == [at(5)]
    assert evaluate(app, at(3600)) == 0
    assert len(stored_invocations(app)) == 2


def test_disabled_task_never_fires(app: Pynenc, tasks: Any, periodic: Callable[..., Any]) -> None:
    periodic("off", every=10, date_changed=at(-3600), enabled=False)
    assert evaluate(app, T0) == 0
    assert not PeriodicTaskRun.objects.exists()
    assert stored_invocations(app) == set()


def test_expires_disables_the_task_with_a_recorded_reason(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    expiring = periodic("expiring", every=10, last_run_at=T0, expires=at(15))

    assert evaluate(app, at(10.5)) == 1
    assert evaluate(app, at(20.5)) == 0
    expiring.refresh_from_db()
    assert not expiring.enabled, "django-celery-beat disables an expired task"
    fired, expired = runs(expiring)
    assert fired.reason == "schedule" and fired.invocation_id
    assert (expired.reason, expired.due_at, expired.invocation_id) == ("expired", at(15), None)
    assert expired.missed == 1  # the due time at 20 s was not run
    assert "expired at" in expired.error
    assert stored_invocations(app) == {fired.invocation_id}


def test_expire_seconds_skips_a_due_time_handled_too_late(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    quick = periodic("quick", every=10, last_run_at=T0, expire_seconds=5)

    assert evaluate(app, at(18)) == 0  # due at 10 s, handled 8 s later
    [expired] = runs(quick)
    assert (expired.reason, expired.due_at, expired.invocation_id) == ("expired", at(10), None)
    assert "expire_seconds (5)" in expired.error
    quick.refresh_from_db()
    assert (quick.last_run_at, quick.total_run_count, quick.enabled) == (at(10), 0, True)

    assert evaluate(app, at(21)) == 1  # due at 20 s, 1 s later: run
    assert runs(quick)[-1].reason == "schedule"


def test_bad_json_is_recorded_and_the_loop_goes_on(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    broken = periodic("broken kwargs", every=10, last_run_at=T0, kwargs='{"x": 1,')
    not_a_list = periodic("args not a list", every=10, last_run_at=T0, args='{"x": 1}')
    good = periodic("good", every=10, last_run_at=T0)

    with caplog.at_level(logging.ERROR, logger="pynenc_django.beat"):
        assert evaluate(app, at(10)) == 1

    [bad_json] = runs(broken)
    assert (bad_json.reason, bad_json.invocation_id) == ("error", None)
    assert "not valid JSON" in bad_json.error
    assert "must be a JSON list" in runs(not_a_list)[0].error
    assert runs(good)[0].reason == "schedule"
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("'broken kwargs'" in m and "not valid JSON" in m for m in logged), logged
    broken.refresh_from_db()
    assert (broken.last_run_at, broken.total_run_count) == (at(10), 0)


def test_unknown_task_is_recorded_never_skipped(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    missing_module = periodic("nope", "proj.tasks.nope", every=10, last_run_at=T0)
    celery_name = periodic("celery name", "send-report", every=10, last_run_at=T0)
    not_a_task = periodic("not a task", "pynenc_django.utils.now_utc", every=10, last_run_at=T0)
    wrong_args = periodic("wrong args", every=10, last_run_at=T0, kwargs='{"x": 1, "z": 2}')

    with caplog.at_level(logging.ERROR, logger="pynenc_django.beat"):
        assert evaluate(app, at(10)) == 0

    errors = {
        pt.name: runs(pt)[0].error for pt in (missing_module, celery_name, not_a_task, wrong_args)
    }
    assert all(r.reason == "error" for r in PeriodicTaskRun.objects.all())
    assert (
        "'proj.tasks.nope' is not a pynenc task: module 'proj.tasks' is not part of an "
        "installed app" in (errors["nope"])
    )
    assert "'module.function'" in errors["celery name"]
    assert "defines a function, not an @app.task named 'now_utc'" in errors["not a task"]
    assert f"{ADD} does not take" in errors["wrong args"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "'nope'" in logged and "proj.tasks.nope" in logged
    assert stored_invocations(app) == set()


def test_queue_and_priority_route_the_invocation(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any], beat_queue: str
) -> None:
    from pynenc_django.models import BrokerMessage

    routed = periodic("routed", every=10, last_run_at=T0, queue=beat_queue, priority=7)
    plain = periodic("plain", every=10, last_run_at=T0)
    unknown = periodic("celery queue", every=10, last_run_at=T0, queue="celery")

    assert evaluate(app, at(10)) == 2
    queued = dict(BrokerMessage.objects.for_app(app.app_id).values_list("invocation_id", "queue"))
    priorities = dict(
        BrokerMessage.objects.for_app(app.app_id).values_list("invocation_id", "priority")
    )
    routed_id, plain_id = runs(routed)[0].invocation_id, runs(plain)[0].invocation_id
    assert (queued[routed_id], priorities[routed_id]) == (beat_queue, 7.0)
    assert queued[plain_id] == "default"
    [error] = runs(unknown)
    assert error.reason == "error"
    assert "queue 'celery' is not one of pynenc's queues (default, beat-q)" in error.error


def test_missed_due_times_are_coalesced_into_one_late_run(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """All runners down for hours: one late run for the newest missed due time, the rest
    counted; due times still within their 60 s run, each (as cron ticks do)."""
    hourly = periodic("hourly", every=1, period="hours", last_run_at=at(-5 * 3600 - 600))
    every_10s = periodic("every 10s", every=10, last_run_at=at(-3600))

    with caplog.at_level(logging.WARNING, logger="pynenc_django.beat"):
        assert evaluate(app, T0) == 9

    [late] = runs(hourly)
    assert (late.reason, late.due_at, late.missed) == ("late", at(-600), 4)
    assert late.late_by_sec == pytest.approx(600)
    assert [(r.reason, r.due_at, r.missed) for r in runs(every_10s)] == [
        ("late", at(-70), 352),
        *[("schedule", at(-s), 0) for s in (60, 50, 40, 30, 20, 10, 0)],
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'hourly'" in m and "4 earlier due time(s) missed" in m for m in warnings)
    assert any("'every 10s'" in m and "352 earlier due time(s) missed" in m for m in warnings)
    hourly.refresh_from_db()
    assert (hourly.last_run_at, hourly.total_run_count) == (at(-600), 1)
    every_10s.refresh_from_db()
    assert (every_10s.last_run_at, every_10s.total_run_count) == (T0, 8)
    assert len(stored_invocations(app)) == 9


def test_due_times_within_their_window_run_each_after_a_short_outage(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    """A runner killed while it held the atomic services: its turn is reaped within the
    runner-loss bound (35 s), well inside a due time's 60 s: nothing is missed."""
    every_10s = periodic("every 10s", every=10, last_run_at=T0)
    assert evaluate(app, at(41)) == 4
    assert [(r.reason, r.due_at, r.missed) for r in runs(every_10s)] == [
        ("schedule", at(s), 0) for s in (10, 20, 30, 40)
    ]
    assert evaluate(app, at(41.5)) == 0


def test_a_minutely_crontab_missed_for_a_month_is_one_late_run(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    minutely = periodic(
        "minutely", crontab={"minute": "*", "timezone": "UTC"}, last_run_at=at(-30 * 86400)
    )
    started = time.monotonic()
    assert evaluate(app, at(5)) == 2
    assert time.monotonic() - started < 10
    late, on_time = runs(minutely)
    assert (late.reason, late.due_at) == ("late", at(-60))
    assert late.missed >= MAX_COUNTED - 1
    assert (on_time.reason, on_time.due_at, on_time.missed) == ("schedule", T0, 0)


def test_a_due_time_already_recorded_is_not_fired_again(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """``last_run_at`` set back (a stale form, a hand edit): the run row still guards."""
    from django_celery_beat.models import PeriodicTask

    every_10s = periodic("every 10s", every=10, last_run_at=T0)
    assert evaluate(app, at(10)) == 1
    PeriodicTask.objects.filter(pk=every_10s.pk).update(last_run_at=T0)

    with caplog.at_level(logging.WARNING, logger="pynenc_django.beat"):
        assert evaluate(app, at(10.5)) == 0
    assert len(runs(every_10s)) == 1
    assert "was handled already" in caplog.text
    every_10s.refresh_from_db()
    assert every_10s.last_run_at == at(10)


def test_only_the_project_app_evaluates_the_schedule(
    app: Pynenc, tasks: Any, app_instance: Pynenc, periodic: Callable[..., Any]
) -> None:
    """Another app on the same database (no PeriodicTask is its) fires nothing."""
    periodic("every 10s", every=10, last_run_at=T0)
    assert run_due_periodic_tasks(app_instance, at(10)) == 0
    assert not PeriodicTaskRun.objects.exists()
    assert evaluate(app, at(10)) == 1


def test_naive_now_is_refused(app: Pynenc) -> None:
    with pytest.raises(ValueError, match="aware"):
        run_due_periodic_tasks(app, datetime(2026, 1, 1, 12, 0))


def test_a_row_never_imports_code_outside_the_installed_apps(app: Pynenc) -> None:
    """``PeriodicTask.task`` is text an admin user typed: naming a module with import-time
    effects outside INSTALLED_APPS must not run them."""
    import sys

    from pynenc_django.beat.names import UnknownTaskError, resolve_task

    assert "antigravity" not in sys.modules
    with pytest.raises(UnknownTaskError, match="not part of an installed app"):
        resolve_task(app, "antigravity.fly")
    assert "antigravity" not in sys.modules  # importing it opens a web browser
