"""Exactly once under a race: evaluators in separate processes (runners on several hosts
whose atomic-service turns overlap, or a stalled one resuming) evaluate the same due
times at the same instant. Each due time must produce one run row and one invocation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pynenc import Pynenc

from pynenc_django.beat.models import PeriodicTaskRun
from tests.beat import racers
from tests.beat.conftest import ADD
from tests.orchestrator.test_process_races import race

RACERS = 6
TASKS = 5
T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def test_racing_evaluators_fire_each_due_time_exactly_once(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    from django_celery_beat.models import PeriodicTask

    from pynenc_django.models import Invocation

    for n in range(TASKS):
        periodic(f"racer {n}", every=30, last_run_at=T0, kwargs=f'{{"x": {n}, "y": 0}}')

    for round_, now in enumerate([T0 + timedelta(seconds=30.5), T0 + timedelta(seconds=61)]):
        outcomes = race(racers.evaluate, [(now.isoformat(),)] * RACERS)
        assert sum(fired for fired, _ in outcomes) == TASKS, f"round {round_}: {outcomes}"
        assert [errors for _, errors in outcomes] == [[]] * RACERS

    rows = list(PeriodicTaskRun.objects.values_list("periodic_task_id", "due_at", "invocation_id"))
    assert len(rows) == 2 * TASKS
    assert Counter((pk, due) for pk, due, _ in rows).most_common(1)[0][1] == 1
    assert {due for _, due, _ in rows} == {T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)}
    stored = set(
        Invocation.objects.for_app(app.app_id)
        .filter(task_id_key=ADD)
        .values_list("invocation_id", flat=True)
    )
    assert stored == {invocation_id for _, _, invocation_id in rows}, (
        "no invocation registered by a racer that lost"
    )
    counts = set(PeriodicTask.objects.values_list("total_run_count", "last_run_at"))
    assert counts == {(2, T0 + timedelta(seconds=60))}
