"""The runner parent gives hot tables that never had statistics their first ANALYZE, after
which a status change finds its row through the unique key, not an ``app_id`` scan
(:mod:`pynenc_django.planner`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from pynenc import Pynenc

from pynenc_django.planner import HOT_TABLES, FirstAnalyze


def noop(i: int) -> int:
    return i


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")
    built = app_instance_builder.build()
    yield built
    built.purge()


def analyzed() -> dict[str, bool]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
            "WHERE relname = ANY(%s)",
            [list(HOT_TABLES)],
        )
        return dict(cursor.fetchall())


def flush_statistics() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    connection.close()  # a backend flushes its counters when it goes idle, or exits


def test_hot_tables_get_their_first_analyze_once_they_have_rows(app: Pynenc) -> None:
    with connection.cursor() as cursor:  # as if never analyzed (counters only)
        for table in HOT_TABLES:
            cursor.execute("SELECT pg_stat_reset_single_table_counters(%s::regclass)", [table])
    assert not any(analyzed().values())

    first = FirstAnalyze("default")
    first.tick()  # empty tables: nothing worth analyzing yet
    assert not any(analyzed().values()) and not first.done

    # Enough rows that reading them all is no longer the cheap plan.
    app.task(noop).parallelize([(i,) for i in range(max(2000, FirstAnalyze.MIN_ROWS))])
    flush_statistics()
    first._next = 0.0  # its next look is due
    first.tick()
    done = analyzed()
    for table in ("pynenc_invocation", "pynenc_broker_message", "pynenc_state_invocation"):
        assert done[table], done
    assert not done["pynenc_state_result"] and not first.done  # no results yet: later

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
