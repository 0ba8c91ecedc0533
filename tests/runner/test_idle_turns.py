"""An idle cluster skips atomic-service turns: after a turn that found nothing to do, a
runner waits for the next cron tick it knows of, at most ``django_atomic_service_idle_sec``
(``tests/runner/test_schedules.py`` checks that ticks and announced events are still on
time with it)."""

from __future__ import annotations

import time

from pynenc import Pynenc

from tests.runner.conftest import Runners

WATCH_SEC = 8.5
#: pynenc's own recovery tasks run on cron ``*/5`` and ``*/15`` (every fifth minute of the
#: clock): a tick inside the watch is one more turn, and a due one, not an idle one.
CORE_CRON_SEC = 300


def completed_turns(app: Pynenc, runner_id: str) -> int:
    from pynenc_django.models import AtomicServiceExecution

    return (
        AtomicServiceExecution.objects.for_app(app.app_id)
        .filter(runner_id=runner_id, status="completed")
        .count()
    )


def turns_while_idle(app: Pynenc, runners: Runners, env: dict[str, str]) -> tuple[int, int]:
    """(turns completed, pynenc's cron ticks due) while a fresh runner idles ``WATCH_SEC``."""
    started = time.time()
    runner = runners.start(processes=1, env=env)
    start = time.monotonic()
    runner_id = runner.runner_id
    time.sleep(max(0.0, WATCH_SEC - (time.monotonic() - start)))
    turns = completed_turns(app, runner_id)
    ticks = int(time.time() // CORE_CRON_SEC) - int(started // CORE_CRON_SEC)
    return turns, ticks


def test_an_idle_runner_takes_a_turn_every_few_seconds_not_every_second(
    app: Pynenc, runners: Runners
) -> None:
    turns, ticks = turns_while_idle(app, runners, {})
    assert 1 <= turns <= 3 + ticks, f"{turns} turns in {WATCH_SEC}s idle\n{runners.diag()}"


def test_idle_skipping_off_takes_a_turn_every_second(app: Pynenc, runners: Runners) -> None:
    turns, _ = turns_while_idle(app, runners, {"PYNENC__DJANGO_ATOMIC_SERVICE_IDLE_SEC": "0"})
    assert turns >= 6, f"{turns} turns in {WATCH_SEC}s with idle skipping off\n{runners.diag()}"
