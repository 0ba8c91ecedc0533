"""A client that submits many calls and reads each ``.result`` afterwards (Celery's
``[r.get() for r in results]``) finds the results in the final-status announcements it
heard meanwhile (PostgreSQL, :meth:`~pynenc_django.wakeup.ResultWaiter.expect`), not one
query each: 2,000 reads took 0.6 s of a 6.5 s end-to-end run on the development machine,
then 0.06-0.1 s."""

from __future__ import annotations

from types import ModuleType

import pytest
from django.db import connection
from pynenc import Pynenc

from tests.orchestrator.test_statement_budget import counted
from tests.runner.conftest import Runners, wait_all_success


@pytest.fixture(autouse=True)
def _postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("final statuses are announced on PostgreSQL only")


def test_results_finished_by_a_runner_are_read_without_a_query(
    app: Pynenc, tasks: ModuleType, runners: Runners
) -> None:
    runner = runners.start(processes=2)
    assert tasks.add(1, 1).result == 2  # this thread has waited once: it is subscribed
    invocations = [tasks.add(i, 1000) for i in range(300)]
    ids = [invocation.invocation_id for invocation in invocations]
    wait_all_success(app, ids, 60, runner.tail)  # read elsewhere: nothing heard yet

    with counted() as statements:
        values = [invocation.result for invocation in invocations]
    assert values == [i + 1000 for i in range(300)]  # what the workers' runs returned
    assert statements == []
