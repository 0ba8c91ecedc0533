"""Cron ticks as data (pynenc_django.trigger.schedule): every tick exactly once, late ones
coalesced and said, on the configured database; threads race where processes would."""

from __future__ import annotations

import hashlib
import inspect
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from pynenc.orchestrator.atomic_service import AtomicServiceRun
from pynenc.trigger.base_trigger import BaseTrigger
from pynenc.trigger.conditions import CronCondition, CronContext

from pynenc_django.trigger.schedule import due_ticks
from tests.trigger.test_trigger_guarantees import race

if TYPE_CHECKING:
    from pynenc import Pynenc

#: pynenc 0.4's ``BaseTrigger._process_loop_iteration_body``, which ScheduleMixin copies.
PYNENC_LOOP_BODY_SHA256 = "490482e25346e75ad3375acac17528ce879b1548107fcb6467d2507b57bc8d58"


def run() -> AtomicServiceRun:
    return AtomicServiceRun(runner_id="test-runner")


def fired_ticks(app: Pynenc, condition: CronCondition) -> list[datetime]:
    """The ticks recorded as valid conditions (what the trigger loop turns into runs)."""
    ticks = [
        vc.context.timestamp
        for vc in app.trigger.get_valid_conditions().values()
        if vc.condition.condition_id == condition.condition_id
        and isinstance(vc.context, CronContext)
    ]
    return sorted(ticks)


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2024, 1, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=minute, seconds=second)


def test_pynencs_loop_body_is_the_one_we_copied() -> None:
    """ScheduleMixin._process_loop_iteration_body is pynenc's with transactions added: a
    pynenc upgrade that changes pynenc's must be merged into ours."""
    source = inspect.getsource(BaseTrigger._process_loop_iteration_body)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == PYNENC_LOOP_BODY_SHA256, (
        "pynenc's trigger loop body changed: merge it into "
        "pynenc_django.trigger.schedule.ScheduleMixin._process_loop_iteration_body, "
        f"then update PYNENC_LOOP_BODY_SHA256 to {digest}"
    )


def test_due_ticks_walks_every_tick_and_bounds_the_walk() -> None:
    assert due_ticks("* * * * *", at(0), at(3, 30)) == ([at(1), at(2), at(3)], False)
    assert due_ticks("* * * * *", at(3), at(3, 59)) == ([], False)
    assert due_ticks("*/5 * * * *", at(0), at(10)) == ([at(5), at(10)], False)
    ticks, more = due_ticks("* * * * *", at(0), at(0) + timedelta(days=30))
    assert more and len(ticks) == 10_000 and ticks[-1] == at(0) + timedelta(days=30)


def test_every_tick_fires_exactly_once_however_often_it_is_evaluated(
    app_instance: Pynenc,
) -> None:
    trigger = app_instance.trigger
    condition = CronCondition("* * * * *")
    trigger.register_condition(condition)
    # Evaluated every 20 s for 5 minutes, and twice at some instants.
    for second in range(0, 300, 20):
        trigger.check_time_based_triggers(at(0, second), atomic_service_run=run())
        trigger.check_time_based_triggers(at(0, second), atomic_service_run=run())
    assert fired_ticks(app_instance, condition) == [at(m) for m in range(5)]
    assert trigger.get_last_cron_execution(condition.condition_id) == at(4)


def test_sparse_evaluation_loses_no_tick_that_was_due_within_its_window(
    app_instance: Pynenc,
) -> None:
    """pynenc fires a tick only when evaluated in the minute it names: evaluated every
    50 s, a ``* * * * *`` schedule lost about one tick in six. Here each tick fires once,
    on time, as long as it is evaluated within its 60 s window."""
    trigger = app_instance.trigger
    condition = CronCondition("* * * * *")
    trigger.register_condition(condition)
    for second in range(0, 600, 50):
        trigger.check_time_based_triggers(at(0, second), atomic_service_run=run())
    assert fired_ticks(app_instance, condition) == [at(m) for m in range(10)]


def test_ticks_missed_while_no_runner_evaluated_run_once_late_and_are_said(
    app_instance: Pynenc, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = app_instance.trigger
    condition = CronCondition("* * * * *")
    trigger.register_condition(condition)
    trigger.check_time_based_triggers(at(0), atomic_service_run=run())
    # Every runner down from 12:00:30 to 14:00:10: 120 ticks missed their window.
    with caplog.at_level(logging.WARNING, logger="pynenc_django"):
        trigger.check_time_based_triggers(at(120, 10), atomic_service_run=run())
    assert fired_ticks(app_instance, condition) == [at(0), at(119), at(120)]
    late = [r for r in caplog.records if "could not run on time" in r.getMessage()]
    assert len(late) == 1
    message = late[0].getMessage()
    assert "119 tick(s)" in message and "skipping the 118 before it" in message, message
    # The late run knows which tick came before it: the admin and the logs can say so.
    late_context = next(
        vc.context
        for vc in trigger.get_valid_conditions().values()
        if isinstance(vc.context, CronContext) and vc.context.timestamp == at(119)
    )
    assert late_context.last_execution == at(0)


def test_a_condition_first_seen_between_ticks_starts_from_the_latest(
    app_instance: Pynenc,
) -> None:
    trigger = app_instance.trigger
    hourly = CronCondition("0 * * * *")
    trigger.register_condition(hourly)
    trigger.check_time_based_triggers(at(30), atomic_service_run=run())  # 12:30: too late
    assert fired_ticks(app_instance, hourly) == []
    assert trigger.get_last_cron_execution(hourly.condition_id) == at(0)
    trigger.check_time_based_triggers(at(60, 5), atomic_service_run=run())
    assert fired_ticks(app_instance, hourly) == [at(60)]


def test_racing_evaluators_fire_each_tick_once(app_instance: Pynenc) -> None:
    """Eight evaluators at the same instants (as runners whose turns overlapped would)."""
    trigger = app_instance.trigger
    conditions = [CronCondition(expr) for expr in ("* * * * *", "*/2 * * * *", "0-59 * * * *")]
    for condition in conditions:
        trigger.register_condition(condition)
    for minute in range(4):
        race(
            lambda i, minute=minute: trigger.check_time_based_triggers(  # type: ignore[misc]
                at(minute, 10), atomic_service_run=run()
            )
        )
    assert fired_ticks(app_instance, conditions[0]) == [at(m) for m in range(4)]
    assert fired_ticks(app_instance, conditions[1]) == [at(0), at(2)]
    assert fired_ticks(app_instance, conditions[2]) == [at(m) for m in range(4)]
