"""Claims vacuum the queue tables once the messages they deleted pile up, dead, in them
(:mod:`pynenc_django.ops.vacuum`): without it each claim's walk from the queue's head
steps over every dead entry (autovacuum looks once a minute, and is off on this
machine's server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from pynenc import Pynenc
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.ops.vacuum import QueueVacuum
from pynenc_django.orchestrator.claim import ClaimOptions
from tests.orchestrator.test_statement_budget import counted

WORKER = RunnerContext("DjangoPersistentProcessRunner", runner_id="vacuum-worker")
MESSAGES = "pynenc_broker_message"


def noop(i: int) -> int:
    return i


@pytest.fixture(autouse=True)
def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL keeps deleted rows until a VACUUM")


@pytest.fixture
def app(app_instance_builder: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pynenc]:
    monkeypatch.setattr(QueueVacuum, "LOOK_EVERY", 50)
    monkeypatch.setattr(QueueVacuum, "MIN_DEAD", 100)
    built = app_instance_builder.build()
    built.state_backend.store_runner_context(WORKER)
    yield built
    built.purge()


def table_stats(table: str = MESSAGES) -> tuple[int, int]:
    """(manual vacuums so far, dead rows), once this backend's counters reached the
    statistics (a backend sends them when idle, at most once a second)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1.1)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables WHERE relname = %s",
            [table],
        )
        vacuums, dead = cursor.fetchone()
    return int(vacuums), int(dead)


def claim_all(app: Pynenc, count: int) -> list[str]:
    """Claim ``count`` invocations one claim at a time, as a worker does; every
    statement the claims sent."""
    with counted() as statements:
        for _ in range(count):
            claimed = app.orchestrator.claim(WORKER, ClaimOptions(run_at_once=True))
            assert len(claimed.invocations) == 1
    return statements


def looks(statements: list[str]) -> int:
    return sum(s.startswith("SELECT relname, n_dead_tup") for s in statements)


def vacuums_in(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("VACUUM")]


def test_claims_vacuum_the_queue_once_its_dead_rows_pass_the_threshold(
    app: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.task(noop).parallelize([(i,) for i in range(260)])
    vacuums, _ = table_stats()

    statements = claim_all(app, 49)  # below LOOK_EVERY: no look at all
    assert looks(statements) == 0 and not vacuums_in(statements)

    monkeypatch.setattr(QueueVacuum, "MIN_DEAD", 10**9)
    statements = claim_all(app, 71)  # the 50th and 100th claims look, and leave it
    assert looks(statements) == 2 and not vacuums_in(statements)
    before = table_stats()  # 120 dead messages, counted
    assert before[0] == vacuums and before[1] >= 120, before

    monkeypatch.setattr(QueueVacuum, "MIN_DEAD", 100)
    statements = claim_all(app, 30)  # the 150th claim looks, and finds enough
    assert looks(statements) == 1
    assert vacuums_in(statements) == [f'VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) "{MESSAGES}"']
    after = table_stats()
    assert after[0] == vacuums + 1 and after[1] < 100, (vacuums, before, after)

    statements = claim_all(app, 50)  # the next look finds too few: no VACUUM
    assert looks(statements) == 1 and not vacuums_in(statements)
    assert table_stats()[0] == vacuums + 1


def test_inside_a_transaction_it_does_not_look(app: Pynenc) -> None:
    """VACUUM cannot run in a transaction block: a claim made inside one (pynenc's own
    runners may) leaves the look to a later claim, and nothing fails."""
    vacuum = QueueVacuum("default")
    with transaction.atomic(), counted() as statements:
        vacuum.claimed(QueueVacuum.LOOK_EVERY)
    assert statements == []


def test_a_failing_look_never_fails_the_claim(
    app: Pynenc, caplog: pytest.LogCaptureFixture
) -> None:
    """A table it may not vacuum, or a look that fails, is logged once; the claims go on."""
    vacuum = QueueVacuum("default", tables=(MESSAGES,))
    vacuum.MIN_DEAD = -1  # every look vacuums

    def failing(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        raise RuntimeError("permission denied to vacuum")

    with connection.execute_wrapper(failing):
        vacuum.claimed(QueueVacuum.LOOK_EVERY)
        vacuum.claimed(QueueVacuum.LOOK_EVERY)
    warnings = [r.getMessage() for r in caplog.records if "could not vacuum" in r.getMessage()]
    assert warnings == [
        "pynenc_django: could not vacuum the queue tables: permission denied to vacuum"
    ]
