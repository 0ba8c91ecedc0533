"""Guarantees of DjangoTrigger that pynenc's conformance suite does not check (and its
SQLite reference does not give), exercised with real threads on the configured database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pynenc.trigger.conditions import CronCondition

from pynenc_django.trigger import DjangoTrigger

if TYPE_CHECKING:
    from pynenc import Pynenc

THREADS = 8


def race[R](worker: Callable[[int], R], threads: int = THREADS) -> list[R]:
    """Run ``worker(i)`` in ``threads`` threads released together; return the results."""
    from django.db import connection

    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = worker(index)
        except BaseException as exc:  # surfaced below, in the test thread
            errors.append(exc)
        finally:
            connection.close()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def cron_condition(app: Pynenc, expression: str = "*/5 * * * *") -> CronCondition:
    condition = CronCondition(expression)
    app.trigger.register_condition(condition)
    return condition


def test_reregistering_a_condition_keeps_its_last_cron_execution(app_instance: Pynenc) -> None:
    condition = cron_condition(app_instance)
    fired_at = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert app_instance.trigger.store_last_cron_execution(condition.condition_id, fired_at)

    # What every new runner process does on start: a fresh trigger re-registers its tasks'
    # conditions, and an explicit reload re-registers them in this process too.
    DjangoTrigger(app_instance).register_condition(CronCondition("*/5 * * * *"))
    app_instance.trigger.reload_task_conditions()
    app_instance.trigger.register_condition(CronCondition("*/5 * * * *"))

    assert app_instance.trigger.get_last_cron_execution(condition.condition_id) == fired_at
    assert app_instance.trigger.get_condition(condition.condition_id) == condition


def test_store_last_cron_execution_is_a_compare_and_set(app_instance: Pynenc) -> None:
    trigger = app_instance.trigger
    condition_id = cron_condition(app_instance).condition_id
    base = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)

    # expected=None means "only if it never ran": exactly one of N racers sets it...
    first = race(
        lambda i: trigger.store_last_cron_execution(condition_id, base + timedelta(seconds=i))
    )
    assert first.count(True) == 1
    stored = trigger.get_last_cron_execution(condition_id)
    assert stored == base + timedelta(seconds=first.index(True))
    assert stored is not None and stored.tzinfo == UTC
    # ...and never again once it is set.
    assert not trigger.store_last_cron_execution(condition_id, base + timedelta(hours=1))

    # N racers expecting the same current value: exactly one moves it forward.
    second = race(
        lambda i: trigger.store_last_cron_execution(
            condition_id, base + timedelta(minutes=5, seconds=i), expected_last_execution=stored
        )
    )
    assert second.count(True) == 1
    assert trigger.get_last_cron_execution(condition_id) == base + timedelta(
        minutes=5, seconds=second.index(True)
    )
    # A stale expectation (the value the losers read) now fails.
    assert not trigger.store_last_cron_execution(
        condition_id, base + timedelta(minutes=10), expected_last_execution=stored
    )
    assert not trigger.store_last_cron_execution(
        "cron_never_registered", base, expected_last_execution=None
    )


def test_claim_trigger_run_has_exactly_one_winner(app_instance: Pynenc) -> None:
    trigger = app_instance.trigger
    results = race(lambda _: trigger.claim_trigger_run("run-contended", expiration_seconds=60))
    assert results.count(True) == 1
    # The claim holds until it expires, whoever asks.
    assert not DjangoTrigger(app_instance).claim_trigger_run("run-contended")


def test_expired_claim_can_be_reclaimed_by_exactly_one(app_instance: Pynenc) -> None:
    trigger = app_instance.trigger
    assert trigger.claim_trigger_run("run-expiring", expiration_seconds=0)
    time.sleep(0.01)

    results = race(lambda _: trigger.claim_trigger_run("run-expiring", expiration_seconds=60))
    assert results.count(True) == 1
    assert not trigger.claim_trigger_run("run-expiring", expiration_seconds=60)


def test_link_trigger_run_to_events_counts_each_pair_once(app_instance: Pynenc) -> None:
    from pynenc.trigger.monitoring import EventRecord

    trigger = app_instance.trigger
    trigger.store_event(EventRecord(event_id="evt-a", event_code="code"))
    trigger.store_event(EventRecord(event_id="evt-b", event_code="code"))

    race(
        lambda i: trigger.link_trigger_run_to_events(
            ["evt-b", "evt-a"], f"inv-{i % 2}", trigger_run_id=f"run-{i}"
        )
    )
    # Re-storing an event never drops its links or resets its count.
    trigger.store_event(EventRecord(event_id="evt-a", event_code="code"))

    from pynenc_django.models import EventEntry

    for event_id in ("evt-a", "evt-b"):
        assert sorted(trigger.get_invocations_triggered_by_event(event_id)) == ["inv-0", "inv-1"]
    counts = EventEntry.objects.for_app(app_instance.app_id).values_list(
        "triggered_invocation_count", flat=True
    )
    assert list(counts) == [2, 2]
    assert trigger.count_events(triggered=True) == 2
    page = trigger.get_event_markers_in_timerange(
        datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC), state="triggered"
    )
    assert page.total == 2


def test_conditions_sourced_from_task_is_one_query(app_instance: Pynenc) -> None:
    from django.db import connections
    from django.test.utils import CaptureQueriesContext
    from pynenc.identifiers.task_id import TaskId
    from pynenc.invocation.status import InvocationStatus
    from pynenc.trigger.arguments import create_argument_filter
    from pynenc.trigger.conditions import StatusCondition, StatusContext

    trigger = app_instance.trigger
    task_id = TaskId("some.module." + "m" * 300, "watched")  # ids far over 255 chars
    conditions = [
        StatusCondition(task_id, [status], create_argument_filter(None))
        for status in (InvocationStatus.SUCCESS, InvocationStatus.FAILED)
    ]
    for condition in conditions:
        trigger.register_condition(condition)
    assert all(len(c.condition_id) > 255 for c in conditions)

    with CaptureQueriesContext(connections[trigger.db_alias]) as queries:
        found = trigger.get_conditions_sourced_from_task(task_id, StatusContext)
    assert len(queries) == 1
    assert {c.condition_id for c in found} == {c.condition_id for c in conditions}


def test_every_task_and_context_is_answered_by_one_query_per_period(
    app_instance_builder: Any,
) -> None:
    """The conditions watching tasks are looked up on every status change, result and
    failure: one query answers every task and context for ``django_conditions_cache_sec``,
    and a condition another process registers counts once that period is over."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext
    from pynenc.identifiers.task_id import TaskId
    from pynenc.invocation.status import InvocationStatus
    from pynenc.trigger.arguments import create_argument_filter
    from pynenc.trigger.conditions import (
        ExceptionCondition,
        ExceptionContext,
        StatusCondition,
        StatusContext,
    )

    app = app_instance_builder.custom_config(django_conditions_cache_sec=0.5).build()
    try:
        trigger = app.trigger
        watched, failing, unwatched = (TaskId("jobs", name) for name in ("a", "b", "c"))
        on_success = StatusCondition(
            watched, [InvocationStatus.SUCCESS], create_argument_filter(None)
        )
        on_error = ExceptionCondition(failing, create_argument_filter(None), ["ValueError"])
        for condition in (on_success, on_error):
            trigger.register_condition(condition)

        def ids(task_id: TaskId, context: Any = None) -> list[str]:
            return [
                c.condition_id for c in trigger.get_conditions_sourced_from_task(task_id, context)
            ]

        with CaptureQueriesContext(connections[trigger.db_alias]) as queries:
            assert ids(watched, StatusContext) == [on_success.condition_id]
            assert ids(watched, ExceptionContext) == []
            assert ids(failing, ExceptionContext) == [on_error.condition_id]
            assert ids(failing, StatusContext) == []
            assert ids(unwatched, StatusContext) == []
            assert ids(watched) == [on_success.condition_id]
        assert len(queries) == 1, [q["sql"] for q in queries]

        # Another process registers a condition on the unwatched task.
        late = StatusCondition(unwatched, [InvocationStatus.FAILED], create_argument_filter(None))
        DjangoTrigger(app).register_condition(late)
        assert ids(unwatched, StatusContext) == [], "cached for the period"
        time.sleep(0.6)
        with CaptureQueriesContext(connections[trigger.db_alias]) as queries:
            assert ids(unwatched, StatusContext) == [late.condition_id]
            assert ids(watched, StatusContext) == [on_success.condition_id]
        assert len(queries) == 1
    finally:
        app.purge()


def test_without_the_cache_each_lookup_reads_its_task_only(app_instance_builder: Any) -> None:
    """``django_conditions_cache_sec = 0``: every lookup is a query of its own, for that
    task's conditions only, and sees a condition another process registered at once."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext
    from pynenc.identifiers.task_id import TaskId
    from pynenc.invocation.status import InvocationStatus
    from pynenc.trigger.arguments import create_argument_filter
    from pynenc.trigger.conditions import StatusCondition, StatusContext

    app = app_instance_builder.custom_config(django_conditions_cache_sec=0).build()
    try:
        trigger = app.trigger
        watched, other = TaskId("jobs", "a"), TaskId("jobs", "b")
        status = [InvocationStatus.SUCCESS]
        first = StatusCondition(watched, status, create_argument_filter(None))
        trigger.register_condition(first)
        with CaptureQueriesContext(connections[trigger.db_alias]) as queries:
            found = trigger.get_conditions_sourced_from_task(watched, StatusContext)
            assert [c.condition_id for c in found] == [first.condition_id]
            assert trigger.get_conditions_sourced_from_task(other, StatusContext) == []
        assert len(queries) == 2
        assert all("jobs.a" in q["sql"] or "jobs.b" in q["sql"] for q in queries), queries
        late = StatusCondition(other, status, create_argument_filter(None))
        DjangoTrigger(app).register_condition(late)
        found = trigger.get_conditions_sourced_from_task(other, StatusContext)
        assert [c.condition_id for c in found] == [late.condition_id]
    finally:
        app.purge()
