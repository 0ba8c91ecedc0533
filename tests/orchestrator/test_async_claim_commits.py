"""On PostgreSQL a worker's claim and RUNNING commit without waiting for the WAL flush;
submissions and final statuses always wait, and the setting never outlives the one
transaction it was made for (``django_async_claim_commits``)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from tests.orchestrator.test_statement_budget import counted

ASYNC = "set_config('synchronous_commit', 'off', true)"
CTX = RunnerContext("DjangoPersistentProcessRunner", runner_id="async-commit-worker")


def noop() -> None:
    """A module-level task body."""


@pytest.fixture(autouse=True)
def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")


@pytest.fixture
def app(configured_app: Any) -> Pynenc:
    return configured_app()


@pytest.fixture
def durable_app(configured_app: Any) -> Pynenc:
    return configured_app(django_async_claim_commits=False)


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


def lifecycle_statements(app: Pynenc) -> dict[InvocationStatus, list[str]]:
    invocation = app.task(noop)()
    statements = {}
    for status in (InvocationStatus.PENDING, InvocationStatus.RUNNING, InvocationStatus.SUCCESS):
        with counted() as sent:
            app.orchestrator.set_invocation_status(invocation.invocation_id, status, CTX)
        statements[status] = sent
        assert app.orchestrator.get_invocation_status(invocation.invocation_id) == status
    return statements


def claim_statements(app: Pynenc) -> list[str]:
    app.task(noop)()
    with counted() as sent:
        [claimed] = list(app.orchestrator.get_invocations_to_run(1, CTX))
    assert app.orchestrator.get_invocation_status(claimed.invocation_id).value == "pending"
    return sent


def test_the_claim_skips_the_flush_and_the_setting_does_not_leak(app: Pynenc) -> None:
    sent = claim_statements(app)
    assert [ASYNC in sql for sql in sent if "DELETE" in sql] == [True]
    assert synchronous_commit() == "on"  # local to the claim's transaction


def test_only_running_skips_the_flush_and_the_setting_does_not_leak(app: Pynenc) -> None:
    assert synchronous_commit() == "on"
    statements = lifecycle_statements(app)
    assert [ASYNC in sql for sql in statements[InvocationStatus.RUNNING]] == [True]
    for status in (InvocationStatus.PENDING, InvocationStatus.SUCCESS):
        assert not any(ASYNC in sql for sql in statements[status]), status
    assert synchronous_commit() == "on"  # local to RUNNING's own transaction


def test_running_inside_a_callers_transaction_stays_durable(app: Pynenc) -> None:
    invocation = app.task(noop)()
    app.orchestrator.set_invocation_status(invocation.invocation_id, InvocationStatus.PENDING, CTX)
    with transaction.atomic(), counted() as sent:
        app.orchestrator.set_invocation_status(
            invocation.invocation_id, InvocationStatus.RUNNING, CTX
        )
    assert sent and not any(ASYNC in sql for sql in sent)
    assert synchronous_commit() == "on"


def test_setting_off_flushes_every_commit(durable_app: Pynenc) -> None:
    statements = lifecycle_statements(durable_app)
    assert not any(ASYNC in sql for sent in statements.values() for sql in sent)
    assert not any(ASYNC in sql for sql in claim_statements(durable_app))
