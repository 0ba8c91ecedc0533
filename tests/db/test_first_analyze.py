"""The runner parent gives tables that never had statistics their first ANALYZE once they
have rows, after which a status change finds its row through the unique key, not an
``app_id`` scan (:mod:`pynenc_django.ops.planner`)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connection
from pynenc import Pynenc
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.ops.planner import HOT_TABLES, FirstAnalyze
from pynenc_django.orchestrator.claim import ClaimOptions

PRIVATE = "pynenc_test_first_analyze"


def noop(i: int) -> int:
    return i


@pytest.fixture(autouse=True)
def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")


@pytest.fixture
def private_table() -> Iterator[str]:
    """A table nothing else writes: its counters are ours alone."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {PRIVATE}")
        cursor.execute(f"CREATE TABLE {PRIVATE} (id integer)")
    yield PRIVATE
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {PRIVATE}")


def analyzed(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = %s", [table]
        )
        return bool(cursor.fetchone()[0])


def flush_statistics() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    connection.close()  # a backend flushes its counters when it goes idle, or exits


def test_a_table_is_analyzed_once_it_has_rows(private_table: str) -> None:
    first = FirstAnalyze("default", tables=(private_table,))
    first.tick()
    assert not analyzed(private_table) and not first.done  # empty: nothing to learn yet

    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {private_table} SELECT generate_series(1, %s)", [200])
    flush_statistics()
    first.tick()  # not due yet: looks are spaced
    assert not analyzed(private_table)
    first._next = 0.0
    first.tick()
    assert analyzed(private_table) and not first.done  # done at the next look, which
    first._next = 0.0  # finds nothing left to analyze
    first.tick()
    assert first.done


def test_after_it_a_status_change_uses_the_unique_key(app_instance: Pynenc) -> None:
    with connection.cursor() as cursor:  # as if never analyzed (counters only)
        cursor.execute("SELECT pg_stat_reset_single_table_counters('pynenc_invocation'::regclass)")
    # Enough rows that reading them all is no longer the cheap plan.
    app_instance.task(noop).parallelize([(i,) for i in range(2000)])
    flush_statistics()
    FirstAnalyze("default").tick()
    assert analyzed("pynenc_invocation")
    assert "pynenc_invocation" in HOT_TABLES

    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(
            "PREPARE pynenc_first_analyze_probe(varchar, varchar) AS "
            "UPDATE pynenc_invocation SET retry_count = retry_count "
            "WHERE app_id = $1 AND invocation_id = $2"
        )
        cursor.execute("EXPLAIN EXECUTE pynenc_first_analyze_probe('a', 'b')")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE pynenc_first_analyze_probe")
        cursor.execute("RESET plan_cache_mode")
    assert "pynenc_invocation_id_uniq" in plan, plan


def never_analyzed(*tables: str) -> None:
    with connection.cursor() as cursor:  # as if never analyzed (counters only)
        for table in tables:
            cursor.execute("SELECT pg_stat_reset_single_table_counters(%s::regclass)", [table])


def test_a_process_that_claims_looks_after_its_first_claims(app_instance: Pynenc) -> None:
    """Without waiting for the runner parent's next look, seconds away: the first claims
    of a new deployment's first burst are the ones planned without statistics."""
    never_analyzed("pynenc_invocation", "pynenc_state_invocation")
    worker = RunnerContext("DjangoPersistentProcessRunner", runner_id="first-analyze-worker")
    app_instance.state_backend.store_runner_context(worker)
    app_instance.task(noop).parallelize([(i,) for i in range(FirstAnalyze.LOOK_EVERY_CLAIMS + 50)])
    flush_statistics()
    for claims in range(1, FirstAnalyze.LOOK_EVERY_CLAIMS + 1):
        assert not analyzed("pynenc_invocation"), f"analyzed before claim {claims}"
        claimed = app_instance.orchestrator.claim(worker, ClaimOptions(run_at_once=True))
        assert len(claimed.invocations) == 1
    assert analyzed("pynenc_invocation") and analyzed("pynenc_state_invocation")


def test_looks_that_find_nothing_to_do_space_out(private_table: str) -> None:
    """An idle runner does not look every 2 s for its first ten minutes."""
    first = FirstAnalyze("default", tables=(private_table,))
    spacings = []
    for _ in range(5):
        first._next = 0.0
        before = time.monotonic()
        first.tick()
        spacings.append(round(first._next - before))
    assert spacings == [2, 4, 8, 10, 10]
    first._started -= FirstAnalyze.EAGER_FOR  # past the first burst: up to a minute
    for _ in range(3):
        first._next = 0.0
        first.tick()
    first._next = 0.0
    before = time.monotonic()
    first.tick()
    assert round(first._next - before) == 60

    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {private_table} SELECT generate_series(1, %s)", [200])
    flush_statistics()
    first._next = 0.0
    before = time.monotonic()
    first.tick()
    assert analyzed(private_table)
    assert round(first._next - before) <= FirstAnalyze.INTERVAL  # a look that analyzed:
    first._next = 0.0  # the next one is soon again
    first.tick()
    assert first.done
