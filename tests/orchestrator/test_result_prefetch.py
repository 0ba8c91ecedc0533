"""A waiting client's status look also brings a small SUCCESS result along, so reading it
costs no query of its own; large results are never dragged along by a status look."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from pynenc import Pynenc
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.store import PREFETCH_RESULT_BYTES
from tests.orchestrator.test_statement_budget import counted


def echo(value: str) -> str:
    return value


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    # Results stay in the state backend, whatever their size (none in the data store).
    built = app_instance_builder.custom_config(disable_client_data_store=True).build()
    yield built
    built.purge()


def run_all(app: Pynenc, count: int) -> None:
    """Claim and run ``count`` invocations here, as a worker would."""
    worker = RunnerContext("DjangoPersistentProcessRunner", runner_id="prefetch-worker")
    for invocation in app.orchestrator.get_invocations_to_run(count, worker):
        invocation.run(worker)


def result_reads(statements: list[str]) -> int:
    return sum(1 for sql in statements if re.match(r"SELECT [`\"]result[`\"] FROM", sql))


@pytest.mark.parametrize("size", [10, PREFETCH_RESULT_BYTES, PREFETCH_RESULT_BYTES + 1])
def test_result_comes_with_the_status_up_to_the_prefetch_size(app: Pynenc, size: int) -> None:
    task = app.task(echo)
    overhead = len(app.client_data_store.serialize("").encode())
    value = "x" * (size - overhead)  # stored (serialized) as exactly ``size`` bytes
    assert len(app.client_data_store.serialize(value).encode()) == size
    invocation = task(value)
    run_all(app, 1)
    with counted() as statements:
        assert invocation.result == value
    assert result_reads(statements) == (0 if size <= PREFETCH_RESULT_BYTES else 1), statements
    with counted() as statements:  # read again: not cached forever, read from the table
        assert app.state_backend.get_result(invocation.invocation_id) == value
    assert result_reads(statements) == 1


def test_group_results_come_with_their_statuses(app: Pynenc) -> None:
    task = app.task(echo)
    values = [f"v{i}" for i in range(20)] + ["L" * (PREFETCH_RESULT_BYTES + 10)]
    group = task.parallelize([(v,) for v in values])
    run_all(app, len(values))
    with counted() as statements:
        assert sorted(group.results) == sorted(values)
    assert result_reads(statements) == 1  # the large one only


def test_purge_forgets_prefetched_results(app: Pynenc) -> None:
    task = app.task(echo)
    invocation = task("before purge")
    run_all(app, 1)
    assert invocation.status.is_final()  # the status look fetched the result
    app.purge()
    with pytest.raises(KeyError):
        app.state_backend.get_result(invocation.invocation_id)
