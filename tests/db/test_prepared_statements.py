"""On PostgreSQL the hot paths' fixed SQL is prepared on the server once per connection,
the ORM's queries never are, and ``django_prepared_statements = False`` prepares nothing
(for transaction-mode poolers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from pynenc import Pynenc
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.models import Invocation

WORKER = RunnerContext("DjangoPersistentProcessRunner", runner_id="prepared-worker")


def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture(autouse=True)
def postgresql_only() -> Iterator[None]:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's (psycopg 3)")
    connection.close()  # a fresh session: nothing prepared yet
    yield
    connection.close()


@pytest.fixture
def app(configured_app: Any) -> Pynenc:
    return configured_app()


@pytest.fixture
def unprepared_app(configured_app: Any) -> Pynenc:
    return configured_app(django_prepared_statements=False)


def lifecycles(app: Pynenc, count: int) -> None:
    task = app.task(add)
    for value in range(count):
        invocation = task(value, 1)
        [claimed] = list(app.orchestrator.get_invocations_to_run(1, WORKER))
        claimed.run(WORKER)
        assert invocation.result == value + 1
        # The ORM, many times over: never prepared, whatever psycopg's threshold.
        assert Invocation.objects.filter(invocation_id=invocation.invocation_id).exists()


def prepared() -> list[tuple[str, int, int]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        return list(cursor.fetchall())


def test_hot_statements_are_prepared_once_and_reused(app: Pynenc) -> None:
    lifecycles(app, 8)
    statements = prepared()
    texts = " ".join(text for text, _, _ in statements)
    for hot in ('UPDATE "pynenc_invocation" SET status', 'DELETE FROM "pynenc_broker_message"'):
        assert hot in texts, texts
    assert 'SELECT 1 AS "a"' not in texts  # the ORM's .exists()
    assert max(generic + custom for _, generic, custom in statements) >= 8  # reused


def test_nothing_is_prepared_when_turned_off(unprepared_app: Pynenc) -> None:
    lifecycles(unprepared_app, 3)
    assert prepared() == []


def test_batches_are_not_pipelined_when_turned_off(unprepared_app: Pynenc) -> None:
    """For transaction-mode poolers: a chunk bigger than a pipeline piece is one
    statement, not pieces in a pipeline of their own transaction."""
    from pynenc_django.orchestrator.registration import PIPELINE_CALLS
    from tests.orchestrator.test_statement_budget import counted

    task = unprepared_app.task(add, parallel_batch_size=3 * PIPELINE_CALLS)
    task.parallelize([(0, i) for i in range(3)])  # the client's one-time writes
    with counted() as statements:
        group = task.parallelize([(1, i) for i in range(3 * PIPELINE_CALLS)])
    assert len(group.invocations) == 3 * PIPELINE_CALLS
    assert len(statements) == 1 and statements[0].startswith("WITH p0 AS"), statements
    assert prepared() == []
