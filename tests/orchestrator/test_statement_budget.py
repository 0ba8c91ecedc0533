"""The statements one trivial invocation costs, from submit to result, pinned.

Issue 6's budget is 15 for a whole lifecycle across every process involved: the client
that submits and reads the result, and the worker that claims and runs it. Here both
sides run in this process, on one connection, counted with Django's
``connection.execute_wrapper`` exactly as ``bench/`` counts real processes; the
worker's cache of invocations is emptied first, because a real worker has never seen the
invocation it claims. Deterministic, so it is a test; timings stay in ``bench/``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, connections, transaction
from pynenc import ConcurrencyControlType, Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.db import STATEMENT_ROWS
from pynenc_django.orchestrator.claim import ClaimOptions
from pynenc_django.orchestrator.registration import PIPELINE_CALLS

#: Statements per lifecycle by vendor, pinned where they are now (issue 6's budget is 15).
#: Everywhere, triggers write the history and the client's final status look brings the
#: result along. PostgreSQL submits in one statement, claims in one (the pop, PENDING
#: and, for a worker that runs its claim at once, RUNNING, and the invocation's row), and
#: stores the result with SUCCESS; SQLite counts the
#: ``BEGIN IMMEDIATE`` of the submit and of the claim, which other drivers send themselves;
#: MariaDB/MySQL pops in two statements (no ``DELETE ... RETURNING`` with a subquery), the
#: first bringing the invocation's row and the queue's length along, so a worker woken by
#: the enqueue does not look at the queue first.
BUDGET = {"postgresql": 6, "sqlite": 15, "mysql": 12}
#: As our worker loop claims (it runs what it claims at once), woken by the enqueue (one host).
WORKER_CLAIM = ClaimOptions(run_at_once=True, work_announced=True)


def add(x: int, y: int) -> int:
    return x + y


@contextmanager
def counted(alias: str = "default") -> Iterator[list[str]]:
    statements: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    with connections[alias].execute_wrapper(wrapper):
        yield statements


def lifecycle(app: Pynenc, task: Any, worker: RunnerContext, value: int) -> int:
    invocation = task(value, 1)  # client: submit
    assert not invocation.status.is_final()  # client: pynenc's result() looks first
    app.state_backend.store.invocations.clear()  # the worker is another process
    [claimed] = app.orchestrator.claim(worker, WORKER_CLAIM).invocations  # worker
    assert claimed.invocation_id == invocation.invocation_id
    claimed.run(worker)  # worker: RUNNING, the task, result, SUCCESS
    return invocation.result  # client: status, then the result


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    built = app_instance_builder.custom_config(django_conditions_cache_sec=3600).build()
    yield built
    built.purge()


def test_trivial_invocation_lifecycle_stays_within_budget(app: Pynenc) -> None:
    task = app.task(add)
    worker = RunnerContext("DjangoPersistentProcessRunner", runner_id="budget-worker")
    assert lifecycle(app, task, worker, 1) == 2  # warm-up: contexts stored, caches filled

    with counted() as statements:
        assert lifecycle(app, task, worker, 2) == 3

    vendor = connections["default"].vendor
    listing = "\n".join(f"  {sql[:150]}" for sql in statements)
    assert len(statements) <= BUDGET[vendor], (
        f"{len(statements)} statements on {vendor}, budget {BUDGET[vendor]}:\n{listing}"
    )


#: Statements of one chunk of a batch (``task.parallelize``; pynenc routes it in chunks of
#: the task's ``parallel_batch_size``) of up to ``STATEMENT_ROWS`` invocations, whatever
#: their number: PostgreSQL gathers the three INSERTs of a chunk into one statement (of a
#: chunk over ``PIPELINE_CALLS``, of each piece, pipelined);
#: SQLite begins (``BEGIN IMMEDIATE``) and runs one ``executemany`` per table; MariaDB/MySQL
#: runs one many-row INSERT per table.
BATCH_CHUNK = {"postgresql": 1, "sqlite": 4, "mysql": 3}


def batch_statements(vendor: str, invocations: int, chunk: int) -> int:
    """What a batch of ``invocations`` costs, pinned: O(1) per chunk, and per
    ``STATEMENT_ROWS`` rows of a chunk where the rows are not gathered."""
    chunks = [min(chunk, invocations - start) for start in range(0, invocations, chunk)]
    if vendor == "postgresql":  # a chunk over PIPELINE_CALLS is sent in pieces
        return sum(-(-rows // PIPELINE_CALLS) for rows in chunks)
    per_table = [-(-rows // STATEMENT_ROWS) for rows in chunks]
    begins = len(chunks) if vendor == "sqlite" else 0
    return begins + 3 * sum(per_table)


@pytest.mark.parametrize(("invocations", "chunk"), [(1, 100), (100, 100), (250, 100), (1200, 1200)])
def test_batch_statements_are_per_chunk_not_per_invocation(
    app: Pynenc, invocations: int, chunk: int
) -> None:
    task = app.task(add, parallel_batch_size=chunk)
    assert len(task.parallelize([(0, i) for i in range(3)]).invocations) == 3  # warm-up

    with counted() as statements:
        group = task.parallelize([(1, i) for i in range(invocations)])

    assert len(group.invocations) == invocations
    vendor = connections["default"].vendor
    expected = batch_statements(vendor, invocations, chunk)
    if invocations == 1:  # pynenc routes a batch of one as a single call: the same cost
        expected = BATCH_CHUNK[vendor]
    listing = "\n".join(f"  {sql[:150]}" for sql in statements)
    assert len(statements) == expected, (
        f"{len(statements)} statements on {vendor} for {invocations} invocations in chunks "
        f"of {chunk}, pinned at {expected}:\n{listing}"
    )
    if vendor == "postgresql":
        assert all(sql.startswith("WITH p0 AS") for sql in statements), listing
    if chunk <= STATEMENT_ROWS:
        assert batch_statements(vendor, chunk, chunk) == BATCH_CHUNK[vendor]


def test_batch_under_running_concurrency_indexes_arguments_per_chunk(app: Pynenc) -> None:
    """The arguments a claim's concurrency check reads are one more INSERT per chunk (on
    PostgreSQL part of its one statement), not one per invocation, and are all there."""
    from pynenc_django.models import InvocationArgument

    task = app.task(
        add, running_concurrency=ConcurrencyControlType.ARGUMENTS, parallel_batch_size=100
    )
    task.parallelize([(0, i) for i in range(3)])  # warm-up

    with counted() as statements:
        group = task.parallelize([(2, i) for i in range(250)])

    vendor = connections["default"].vendor
    per_chunk = {"postgresql": 1, "sqlite": 5, "mysql": 4}[vendor]
    listing = "\n".join(f"  {sql[:150]}" for sql in statements)
    assert len(statements) == 3 * per_chunk, listing
    ids = [invocation.invocation_id for invocation in group.invocations]
    indexed = InvocationArgument.objects.filter(app_id=app.app_id, invocation_id__in=ids)
    assert sorted(indexed.values_list("arg_key", "arg_value")) == sorted(
        [("x", "2") for _ in ids] + [("y", str(i)) for i in range(250)]
    )


def test_history_is_complete_without_its_own_statements(app: Pynenc) -> None:
    """Whoever writes it (database triggers or the orchestrator), every status change
    is in the history, attributed to the runner that made it, in order."""
    task = app.task(add)
    worker = RunnerContext("DjangoPersistentProcessRunner", runner_id="history-worker")
    invocation = task(5, 1)
    [claimed] = app.orchestrator.claim(worker, ClaimOptions(run_at_once=True)).invocations
    claimed.run(worker)
    assert invocation.result == 6

    history = app.state_backend.get_history(invocation.invocation_id)
    assert [h.status_record.status for h in history] == [
        InvocationStatus.REGISTERED,
        InvocationStatus.PENDING,
        InvocationStatus.RUNNING,
        InvocationStatus.SUCCESS,
    ]
    assert [h.runner_context_id for h in history[1:]] == ["history-worker"] * 3
    assert [h.status_record.runner_id for h in history[1:]] == [
        "history-worker",
        "history-worker",
        None,
    ]
    contexts = app.state_backend.get_runner_context("history-worker")
    assert contexts is not None and contexts.runner_id == "history-worker"


def test_final_status_releases_waiters(app: Pynenc) -> None:
    """The waiter edges of an invocation go with its final status (a trigger, or the
    orchestrator's DELETE where there is none), and only then."""
    from pynenc_django.models import BlockingEdge

    task = app.task(add)
    waiter, waited = task(1, 1), task(2, 2)
    app.orchestrator.blocking_control.waiting_for_results(
        waiter.invocation_id, [waited.invocation_id]
    )
    edges = BlockingEdge.objects.filter(app_id=app.app_id, waited_id=waited.invocation_id)
    worker = RunnerContext("DjangoPersistentProcessRunner", runner_id="edge-worker")
    app.orchestrator.set_invocation_status(waited.invocation_id, InvocationStatus.PENDING, worker)
    app.orchestrator.set_invocation_status(waited.invocation_id, InvocationStatus.RUNNING, worker)
    assert edges.count() == 1
    app.orchestrator.set_invocation_status(waited.invocation_id, InvocationStatus.FAILED, worker)
    assert edges.count() == 0


def test_an_edge_to_an_invocation_already_final_is_not_left_behind(app: Pynenc) -> None:
    """A waited invocation that became final between the waiter's look and its edge's
    insert released its waiters before the edge existed: the edge must not stay (it
    did, for good: ``tests/runner/test_fan_out.py`` saw it with two fast workers)."""
    from pynenc_django.models import BlockingEdge

    task = app.task(add)
    waiter, done, pending = task(1, 1), task(2, 2), task(3, 3)
    worker = RunnerContext("DjangoPersistentProcessRunner", runner_id="edge-worker")
    for status in (InvocationStatus.PENDING, InvocationStatus.RUNNING, InvocationStatus.SUCCESS):
        app.orchestrator.set_invocation_status(done.invocation_id, status, worker)

    app.orchestrator.blocking_control.waiting_for_results(
        waiter.invocation_id, [done.invocation_id, pending.invocation_id]
    )

    edges = BlockingEdge.objects.filter(app_id=app.app_id, waiter_id=waiter.invocation_id)
    assert list(edges.values_list("waited_id", flat=True)) == [pending.invocation_id]
    # One waited id (a single ``.result``) takes the prepared statement: the same holds.
    alone = task(4, 4)
    app.orchestrator.blocking_control.waiting_for_results(alone.invocation_id, [done.invocation_id])
    assert not BlockingEdge.objects.filter(app_id=app.app_id, waiter_id=alone.invocation_id)


def test_an_edge_to_an_invocation_whose_final_status_commits_meanwhile_is_not_left_behind(
    app: Pynenc,
) -> None:
    """The other order: the waited invocation's final status is written (its trigger
    deletes the edges it sees: none yet) but commits only after the waiter's edge is in
    and its look for final invocations has begun. That look must wait for the commit; on
    PostgreSQL it saw the status as not final and left the edge for good
    (``tests/runner/test_fan_out.py`` saw it on a loaded machine)."""
    from pynenc_django.models import BlockingEdge

    task = app.task(add)
    waiter, waited = task(1, 1), task(2, 2)
    worker = RunnerContext("DjangoPersistentProcessRunner", runner_id="edge-worker")
    for status in (InvocationStatus.PENDING, InvocationStatus.RUNNING):
        app.orchestrator.set_invocation_status(waited.invocation_id, status, worker)
    written, commit = threading.Event(), threading.Event()

    def finish() -> None:
        try:
            with transaction.atomic():
                app.orchestrator.set_invocation_status(
                    waited.invocation_id, InvocationStatus.SUCCESS, worker
                )
                written.set()
                commit.wait(30)
        finally:
            connections.close_all()

    finisher = threading.Thread(target=finish)
    finisher.start()
    assert written.wait(30)
    threading.Timer(1.0, commit.set).start()
    app.orchestrator.blocking_control.waiting_for_results(
        waiter.invocation_id, [waited.invocation_id]
    )
    commit.set()
    finisher.join(30)

    assert app.orchestrator.get_invocation_status(waited.invocation_id) == InvocationStatus.SUCCESS
    edges = BlockingEdge.objects.filter(app_id=app.app_id, waiter_id=waiter.invocation_id)
    assert list(edges.values_list("waited_id", flat=True)) == []


@pytest.fixture
def app_without_triggers(app_instance_builder: Any) -> Iterator[Pynenc]:
    """MariaDB/MySQL on a server that refused migration 0004's triggers."""
    if connection.vendor != "mysql":
        pytest.skip("the triggers are optional on MariaDB/MySQL only")
    migration = importlib.import_module(
        "pynenc_django.migrations.0004_mysql_status_history_triggers"
    )
    with connection.schema_editor() as editor:
        migration.remove(None, editor)
    try:
        built = app_instance_builder.build()
        assert built.orchestrator.history_by_database is False
        yield built
        built.purge()
    finally:
        with connection.schema_editor() as editor:
            migration.install(None, editor)


def test_history_and_waiters_without_triggers(app_without_triggers: Pynenc) -> None:
    """The orchestrator writes both itself, in the status change's transaction."""
    test_history_is_complete_without_its_own_statements(app_without_triggers)
    test_final_status_releases_waiters(app_without_triggers)
