"""Runner heartbeats: one upsert statement each, what they keep and what they refresh, and
writers racing on the same rows (a runner parent writes its workers' heartbeats while
each worker writes its own)."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from pynenc import Pynenc

from pynenc_django.models import RunnerHeartbeat
from tests import racers
from tests.orchestrator.test_process_races import race
from tests.orchestrator.test_statement_budget import counted


def beats(app: Pynenc) -> dict[str, RunnerHeartbeat]:
    return {row.runner_id: row for row in RunnerHeartbeat.objects.for_app(app.app_id)}


def test_a_heartbeat_is_one_statement_and_keeps_what_it_must(app_instance: Pynenc) -> None:
    orchestrator = app_instance.orchestrator
    with counted() as statements:
        orchestrator.register_runner_heartbeats(["a", "b", "a"], True, ["q1"])
    assert len(statements) == 1, statements  # no BEGIN/COMMIT around it either
    assert not connection.in_atomic_block
    first = beats(app_instance)
    assert sorted(first) == ["a", "b"]
    assert first["a"].can_run_atomic_service and first["a"].consumed_queues == ["q1"]

    time.sleep(0.01)
    with counted() as statements:
        orchestrator.register_runner_heartbeats(["a", "c"], False, ["q2"])
    assert len(statements) == 1, statements
    second = beats(app_instance)
    assert sorted(second) == ["a", "b", "c"]
    assert second["a"].created_at == first["a"].created_at  # slot order depends on it
    assert second["a"].last_heartbeat > first["a"].last_heartbeat
    assert not second["a"].can_run_atomic_service and second["a"].consumed_queues == ["q2"]
    assert second["b"].last_heartbeat == first["b"].last_heartbeat  # not named: untouched


def test_an_unnamed_writer_never_erases_a_name(
    app_instance: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script's runner, or an older process, writes no name (``pynenc_runner --name``)."""
    orchestrator = app_instance.orchestrator
    for name, expected in (("web-1", "web-1"), ("", "web-1"), ("web-2", "web-2")):
        monkeypatch.setattr(orchestrator, "runner_name", lambda name=name: name)
        orchestrator.register_runner_heartbeats(["runner"])
        assert beats(app_instance)["runner"].name == expected, name


def test_writers_racing_on_the_same_heartbeats_all_succeed(app_instance: Pynenc) -> None:
    """Four processes upsert overlapping rows, in different orders, 100 times each."""
    ids = ["parent", "worker-1", "worker-2"]
    orders = [(ids, 100), (ids[::-1], 100), (ids[1:], 100), (ids[:1], 100)]
    outcomes = race(racers.beat_rounds, [(app_instance.app_id, *order) for order in orders])
    assert sorted(outcomes) == [100] * 4
    rows = RunnerHeartbeat.objects.for_app(app_instance.app_id)
    assert sorted(rows.values_list("runner_id", flat=True)) == sorted(ids)
