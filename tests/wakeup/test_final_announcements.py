"""PostgreSQL announces a final status with what a waiting client reads next (migration
0011): the status record and a small SUCCESS result. A client woken by it reads nothing
more; whatever the announcement cannot carry is read as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus

from pynenc_django.wakeup import ResultWaiter, listen_connection, result_waiter
from pynenc_django.wakeup.signals import FINAL_CHANNEL, FinalAnnouncement, parse_final
from tests.orchestrator.test_result_prefetch import run_all
from tests.orchestrator.test_statement_budget import counted

MAX_WAIT = 30.0


def echo(value: Any) -> Any:
    return value


def boom() -> None:
    raise ValueError("boom")


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    built = app_instance_builder.custom_config(disable_client_data_store=True).build()
    yield built
    built.purge()


@pytest.fixture
def waiter() -> Iterator[ResultWaiter]:
    if connection.vendor != "postgresql":
        pytest.skip("final statuses are announced on PostgreSQL only")
    waiter_ = result_waiter("default", max_wait=MAX_WAIT, listen=True)
    waiter_.close()  # unsubscribed, whatever an earlier test left: the first wait subscribes
    yield waiter_
    waiter_.close()


@pytest.fixture
def listener() -> Iterator[psycopg.Connection[Any]]:
    """A plain LISTEN on the channel, to read the payloads themselves."""
    if connection.vendor != "postgresql":
        pytest.skip("final statuses are announced on PostgreSQL only")
    conn = listen_connection("default", FINAL_CHANNEL)
    yield conn
    conn.close()


def payloads(conn: psycopg.Connection[Any], invocation_id: str) -> list[str]:
    heard = [n.payload for n in conn.notifies(timeout=2.0, stop_after=1)]
    return [p for p in heard if invocation_id in p]


def stored_record(app: Pynenc, invocation_id: str) -> Any:
    app.orchestrator.store.finals.clear()
    return app.orchestrator._read_status_record(invocation_id)


def test_a_success_is_announced_with_its_record_and_result(
    app: Pynenc, listener: psycopg.Connection[Any]
) -> None:
    invocation = app.task(echo)({"a": 'quoted "text"', "n": [1, 2]})
    run_all(app, 1)
    [payload] = payloads(listener, invocation.invocation_id)
    invocation_id, heard = parse_final(payload)
    record = stored_record(app, invocation.invocation_id)
    assert invocation_id == invocation.invocation_id
    assert heard == FinalAnnouncement(
        app.app_id, "success", record.runner_id, record.timestamp, heard.result if heard else None
    )
    assert heard is not None and heard.result is not None
    assert app.serializer.deserialize(heard.result) == {"a": 'quoted "text"', "n": [1, 2]}


def test_a_woken_client_reads_nothing_more(app: Pynenc, waiter: ResultWaiter) -> None:
    invocation = app.task(echo)("small")
    waiter.wait([invocation.invocation_id])  # subscribes
    run_all(app, 1)
    waiter.wait([invocation.invocation_id])  # woken by the announcement
    with counted() as statements:
        assert invocation.status == InvocationStatus.SUCCESS
        assert invocation.result == "small"
    assert statements == []
    cached = app.orchestrator.store.finals.get(invocation.invocation_id)
    assert cached == stored_record(app, invocation.invocation_id), "the record as stored"


def test_results_are_kept_for_the_awaited_invocations_only(
    app: Pynenc, waiter: ResultWaiter
) -> None:
    """Every final status of the database reaches each listening process: a waiter keeps
    results only for what its wait awaits (the others' are read), and hands each out once."""
    task = app.task(echo)
    awaited, other = task("awaited"), task("other")
    waiter.wait([awaited.invocation_id])  # subscribes
    run_all(app, 2)
    waiter.wait([awaited.invocation_id])  # woken: both announced meanwhile
    assert waiter.announced(other.invocation_id)
    with counted() as statements:
        assert awaited.result == "awaited"
    assert statements == []
    heard = waiter.announcement(awaited.invocation_id)
    assert heard is not None and heard.result is None, "handed out once"
    with counted() as statements:
        assert other.result == "other"
    assert len(statements) == 1, statements


@pytest.mark.parametrize("value", ["L" * 5000, '"' * 3000, "\\" * 3000])
def test_what_does_not_fit_is_read(
    app: Pynenc, waiter: ResultWaiter, listener: psycopg.Connection[Any], value: str
) -> None:
    """A result over the size, or one whose JSON escaping would outgrow NOTIFY's limit:
    the status is still announced (the SUCCESS statement never fails for it), and the
    client reads the result with the status, in one statement."""
    invocation = app.task(echo)(value)
    waiter.wait([invocation.invocation_id])
    run_all(app, 1)
    [payload] = payloads(listener, invocation.invocation_id)
    assert len(payload.encode()) < 8000
    waiter.wait([invocation.invocation_id])
    with counted() as statements:
        assert invocation.result == value
    assert len(statements) == 1, statements


def test_a_failure_is_announced_without_a_result(
    app: Pynenc, waiter: ResultWaiter, listener: psycopg.Connection[Any]
) -> None:
    invocation = app.task(boom)()
    waiter.wait([invocation.invocation_id])
    with pytest.raises(ValueError, match="boom"):  # run here, a worker's run re-raises
        run_all(app, 1)
    [payload] = payloads(listener, invocation.invocation_id)
    assert json.loads(payload)["s"] == "failed" and json.loads(payload)["v"] is None
    waiter.wait([invocation.invocation_id])
    with counted() as statements:
        assert invocation.status == InvocationStatus.FAILED
    assert statements == []
    with pytest.raises(ValueError, match="boom"):
        invocation.result  # noqa: B018 (the exception is read from the state backend)


def test_another_apps_announcement_is_not_taken_for_ours(app: Pynenc, waiter: ResultWaiter) -> None:
    """An announcement only counts for the app it names: ids are the only key the
    waiter keeps, and a forged or foreign one must not stand in for our status."""
    invocation = app.task(echo)("ours")
    waiter.wait([invocation.invocation_id])
    forged = json.dumps(
        {"a": "another-app", "i": invocation.invocation_id, "s": "success", "r": None,
         "t": "2026-01-01T00:00:00+00:00", "v": app.serializer.serialize("forged")}
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [FINAL_CHANNEL, forged])
    waiter.wait([invocation.invocation_id])
    assert invocation.status == InvocationStatus.REGISTERED, "read, not announced"
    run_all(app, 1)
    assert invocation.result == "ours"


def test_payloads_parse_or_fall_back_to_a_read() -> None:
    assert parse_final("01abc") == ("01abc", None)  # migration 0003's bare id
    assert parse_final("{not json") == ("", None)
    assert parse_final('{"i": "01abc", "s": "success"}') == ("01abc", None)  # fields missing
    assert parse_final('{"i": "01abc", "a": "x", "s": "success", "r": null, "t": "never"}') == (
        "01abc",
        None,
    )
    running = '{"i": "01abc", "a": "x", "s": "running", "r": null, "t": "2026-12-07T00:00:00Z"}'
    assert parse_final(running) == ("01abc", None), "only a final status is taken as read"
    invocation_id, heard = parse_final(
        '{"i": "01abc", "a": "x", "s": "failed", "r": "w", "t": "2026-12-07T01:02:03.5+01:00"}'
    )
    assert invocation_id == "01abc" and heard is not None
    assert (heard.status, heard.runner_id, heard.result) == ("failed", "w", None)
    assert heard.timestamp.isoformat() == "2026-12-07T00:02:03.500000+00:00"


def test_results_of_what_this_process_submits_are_kept_up_to_a_size(
    app: Pynenc, waiter: ResultWaiter
) -> None:
    """Submitted while subscribed, read later without a wait in between: each result is
    taken from the announcements heard meanwhile, the newest ``budget`` characters of
    them; the older ones dropped are read, each with its status."""
    task = app.task(echo)
    waiter.wait([task("subscribe").invocation_id])  # this thread's wait: subscribed now
    values = [f"{i:02d}" + "v" * 998 for i in range(10)]  # about 1,000 characters each
    invocations = [task(value) for value in values]
    size = len(app.serializer.serialize(values[0]))
    waiter._results.budget = 3 * size  # room for the last three
    run_all(app, 11)

    with counted() as statements:
        assert [invocation.result for invocation in invocations] == values
    assert len(statements) == 7, statements  # the seven oldest, dropped
    assert len(waiter._results) == 0 and waiter._results.size == 0


def test_a_result_nobody_expects_is_not_kept(app: Pynenc, waiter: ResultWaiter) -> None:
    """Every final status of the database is announced to every listening process: a
    result is kept only for what this process submitted while subscribed, or awaits."""
    task = app.task(echo)
    waiter.wait([task("subscribe").invocation_id])
    expected = task("mine")
    unexpected = task("someone else's")
    waiter._expected.pop(unexpected.invocation_id)  # as if another process submitted it
    run_all(app, 3)
    with counted() as statements:
        assert expected.result == "mine"
    assert statements == []
    assert waiter.announced(unexpected.invocation_id)
    with counted() as statements:
        assert unexpected.result == "someone else's"
    assert len(statements) == 1, statements


def test_kept_results_go_with_the_subscription(app: Pynenc, waiter: ResultWaiter) -> None:
    """Closed (idle for ``django_result_listen_idle_sec``, or by ``close``), the waiter's
    announcements are no longer consulted: the results it kept are released, not held."""
    task = app.task(echo)
    waiter.wait([task("subscribe").invocation_id])
    kept = task("kept")
    run_all(app, 2)
    assert waiter.drain()
    assert len(waiter._results) == 1 and waiter._results.size > 0
    waiter.close()
    assert len(waiter._results) == 0 and waiter._results.size == 0
    with counted() as statements:
        assert kept.result == "kept"
    assert len(statements) >= 1, "read"
