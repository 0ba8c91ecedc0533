"""A call is stored, registered and queued in one transaction: a failure half-way leaves
nothing behind (no REGISTERED invocation that nothing would ever run), and a transient
failure is retried as a whole."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import DatabaseError, OperationalError, connection
from pynenc import Pynenc
from pynenc.runner.runner_context import RunnerContext

import pynenc_django.db.retry
from pynenc_django.models import BrokerMessage, Invocation, StateInvocation
from tests.orchestrator.test_statement_budget import counted

WORKER = RunnerContext("DjangoPersistentProcessRunner", runner_id="submit-worker")


def add(x: int, y: int) -> int:
    return x + y


class QueueDown(OperationalError):
    """Stands for any database error while queueing."""


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    built = app_instance_builder.build()
    yield built
    built.purge()


def rows(app: Pynenc) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        model.objects.filter(app_id=app.app_id).count()
        for model in (StateInvocation, Invocation, BrokerMessage)
    )


def failing_route(app: Pynenc, monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """The broker's insert fails ``failures`` times, then works; returns the call log."""
    broker = app.broker
    original = broker._route_invocations  # type: ignore[attr-defined]
    calls: list[int] = []

    def route(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise QueueDown("the queue insert failed")
        original(*args, **kwargs)

    monkeypatch.setattr(broker, "_route_invocations", route)
    return calls


def test_a_failed_queue_insert_leaves_nothing(app: Pynenc, monkeypatch: pytest.MonkeyPatch) -> None:
    task = app.task(add)
    failing_route(app, monkeypatch, failures=100)
    with pytest.raises(QueueDown):
        task(1, 2)
    assert rows(app) == (0, 0, 0)


def test_a_transient_failure_is_retried_whole(app: Pynenc, monkeypatch: pytest.MonkeyPatch) -> None:
    task = app.task(add)
    calls = failing_route(app, monkeypatch, failures=1)
    monkeypatch.setattr(
        pynenc_django.db.retry, "is_transient", lambda exc: isinstance(exc, QueueDown)
    )
    invocation = task(1, 2)
    assert len(calls) == 2
    assert rows(app) == (1, 1, 1)  # the state row too, though its first insert rolled back
    [claimed] = list(app.orchestrator.get_invocations_to_run(1, WORKER))
    app.state_backend.store.invocations.clear()  # read it back from the table
    claimed.run(WORKER)
    assert invocation.result == 3


@contextmanager
def queue_refused_by_the_database() -> Iterator[None]:
    """A trigger that makes the database itself refuse every queue insert."""
    refuse = {
        "postgresql": [
            "CREATE FUNCTION pynenc_test_refuse() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION 'queue down'; END $$",
            "CREATE TRIGGER pynenc_test_refuse BEFORE INSERT ON pynenc_broker_message "
            "FOR EACH ROW EXECUTE FUNCTION pynenc_test_refuse()",
        ],
        "sqlite": [
            "CREATE TRIGGER pynenc_test_refuse BEFORE INSERT ON pynenc_broker_message "
            "BEGIN SELECT RAISE(ABORT, 'queue down'); END"
        ],
        "mysql": [
            "CREATE TRIGGER pynenc_test_refuse BEFORE INSERT ON pynenc_broker_message "
            "FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'queue down'"
        ],
    }[connection.vendor]
    with connection.cursor() as cursor:
        for sql in refuse:
            cursor.execute(sql)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER pynenc_test_refuse"
                + (" ON pynenc_broker_message" if connection.vendor == "postgresql" else "")
            )
            if connection.vendor == "postgresql":
                cursor.execute("DROP FUNCTION pynenc_test_refuse()")


@pytest.mark.parametrize("calls", [1, 3, 1200])
def test_a_queue_insert_the_database_refuses_leaves_nothing(app: Pynenc, calls: int) -> None:
    """Refused inside the database, after the state and REGISTERED rows were written by
    the same statement (PostgreSQL) or transaction: none of them stays. 1,200 calls in
    one chunk take several INSERTs per table (``STATEMENT_ROWS``), all in that statement
    or transaction."""
    task = app.task(add, parallel_batch_size=1200)
    with queue_refused_by_the_database(), pytest.raises(DatabaseError, match="queue down"):
        if calls == 1:
            task(1, 2)
        else:
            task.parallelize([(i, i) for i in range(calls)])
    assert rows(app) == (0, 0, 0)
    invocation = task(1, 2)  # the state backend's cache forgot the rolled-back rows
    assert rows(app) == (1, 1, 1)
    [claimed] = list(app.orchestrator.get_invocations_to_run(1, WORKER))
    app.state_backend.store.invocations.clear()
    claimed.run(WORKER)
    assert invocation.result == 3


def test_a_later_piece_of_a_pipelined_batch_refused_leaves_nothing(app: Pynenc) -> None:
    """PostgreSQL sends a big chunk in pieces without waiting for each (pipelined): when
    the database refuses the third piece's queue insert, after two pieces' rows were
    written, none of the chunk's rows stays, and the rows written first are not cached as
    stored."""
    if connection.vendor != "postgresql":
        pytest.skip("pipelined pieces are PostgreSQL's (psycopg 3)")
    from pynenc_django.orchestrator.registration import PIPELINE_CALLS

    task = app.task(add, parallel_batch_size=4 * PIPELINE_CALLS)
    limit = 2 * PIPELINE_CALLS
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION pynenc_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF (SELECT count(*) FROM pynenc_broker_message) >= {limit} THEN "
            "RAISE EXCEPTION 'queue full'; END IF; RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER pynenc_test_refuse BEFORE INSERT ON pynenc_broker_message "
            "FOR EACH STATEMENT EXECUTE FUNCTION pynenc_test_refuse()"
        )
    statements: list[str] = []
    try:
        with counted() as statements, pytest.raises(DatabaseError, match="queue full"):
            task.parallelize([(i, i) for i in range(4 * PIPELINE_CALLS)])
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER pynenc_test_refuse ON pynenc_broker_message")
            cursor.execute("DROP FUNCTION pynenc_test_refuse()")
    pieces = [sql for sql in statements if sql.startswith("WITH p0 AS")]
    assert len(pieces) == 4, statements  # every piece was sent, one statement each
    assert rows(app) == (0, 0, 0)
    group = task.parallelize([(i, i) for i in range(4 * PIPELINE_CALLS)])
    assert rows(app) == (4 * PIPELINE_CALLS,) * 3
    [claimed] = list(app.orchestrator.get_invocations_to_run(1, WORKER))
    app.state_backend.store.invocations.clear()
    claimed.run(WORKER)
    assert claimed.invocation_id in {i.invocation_id for i in group.invocations}


def test_an_error_building_a_later_piece_leaves_nothing(
    app: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in the client while it builds the third piece, after two pieces were
    sent without waiting: what they wrote is rolled back, not committed (ending the
    pipeline's implicit transaction would commit it)."""
    if connection.vendor != "postgresql":
        pytest.skip("pipelined pieces are PostgreSQL's (psycopg 3)")
    from pynenc_django.orchestrator.registration import PIPELINE_CALLS

    task = app.task(add, parallel_batch_size=4 * PIPELINE_CALLS)
    orchestrator = app.orchestrator
    original = orchestrator.route_invocations
    pieces: list[int] = []

    def route(invocations: Any) -> None:
        pieces.append(len(invocations))
        if len(pieces) == 3:
            raise RuntimeError("the client failed half-way")
        original(invocations)

    monkeypatch.setattr(orchestrator, "route_invocations", route)
    with pytest.raises(RuntimeError, match="half-way"):
        task.parallelize([(i, i) for i in range(4 * PIPELINE_CALLS)])
    assert pieces == [PIPELINE_CALLS] * 3
    assert rows(app) == (0, 0, 0)
    monkeypatch.undo()
    task.parallelize([(i, i) for i in range(4 * PIPELINE_CALLS)])
    assert rows(app) == (4 * PIPELINE_CALLS,) * 3


def test_a_pipelined_batch_whose_commit_went_unseen_is_stored_once(
    app: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the server committed the pipelined chunk, before the
    client saw it: the retry stores the same invocations again (a no-op for each), not a
    second set of new ones that would run every call twice."""
    if connection.vendor != "postgresql":
        pytest.skip("pipelined pieces are PostgreSQL's (psycopg 3)")
    from pynenc_django.orchestrator import registration
    from pynenc_django.orchestrator.registration import PIPELINE_CALLS

    real = registration.pipelined
    attempts: list[int] = []

    @contextmanager
    def unseen_commit(alias: str) -> Iterator[bool]:
        attempts.append(1)
        with real(alias) as pipelining:
            yield pipelining
        if len(attempts) == 1:  # committed, and then the connection is gone
            raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(registration, "pipelined", unseen_commit)
    task = app.task(add, parallel_batch_size=2 * PIPELINE_CALLS)
    group = task.parallelize([(i, i) for i in range(2 * PIPELINE_CALLS)])
    assert len(attempts) == 2
    ids = {i.invocation_id for i in group.invocations}
    assert len(ids) == 2 * PIPELINE_CALLS
    for model in (StateInvocation, Invocation):
        stored = model.objects.filter(app_id=app.app_id).values_list("invocation_id", flat=True)
        assert sorted(stored) == sorted(ids), model
    queued = BrokerMessage.objects.filter(app_id=app.app_id)
    assert set(queued.values_list("invocation_id", flat=True)) == ids


def test_a_big_batch_inside_the_callers_transaction_is_rolled_back_with_it(app: Pynenc) -> None:
    """Inside the caller's ``atomic()`` a batch is written in the caller's transaction (not
    pipelined in one of its own): the caller's rollback takes all of it."""
    from django.db import transaction

    from pynenc_django.orchestrator.registration import PIPELINE_CALLS

    task = app.task(add, parallel_batch_size=3 * PIPELINE_CALLS)

    class CallerRollsBack(Exception):
        pass

    with pytest.raises(CallerRollsBack), transaction.atomic():
        task.parallelize([(i, i) for i in range(3 * PIPELINE_CALLS)])
        assert rows(app) == (3 * PIPELINE_CALLS,) * 3  # visible inside the transaction
        raise CallerRollsBack
    assert rows(app) == (0, 0, 0)


def test_a_submit_is_one_statement_on_postgresql(app: Pynenc) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a data-modifying WITH is PostgreSQL's")
    task = app.task(add)
    task(0, 0)  # the client's runner context is stored once per process
    with counted() as statements:
        task(1, 2)
    assert len(statements) == 1 and statements[0].startswith("WITH p0 AS"), statements
    assert rows(app) == (2, 2, 2)
