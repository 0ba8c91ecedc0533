"""The django-celery-beat workflow end to end: a person creates a periodic task in the
admin (headless Chromium, as ``tests/admin/test_browser.py``), a real ``pynenc_runner``
of the test project runs it within seconds, and disabling it in the admin stops it.

Every run of ``recorded_sleep`` appends its own ``start``/``finish`` lines to a file: what
ran is read from the task's side effect, and matched with the invocations the schedule
recorded. Screenshots: ``.test-artifacts/admin-beat-*.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pynenc import Pynenc

from pynenc_django.beat.models import PeriodicTaskRun
from tests.admin.test_browser import SCREENSHOT, admin_page, chromium_or_skip
from tests.beat.conftest import RECORDED, beat_wired
from tests.runner.conftest import Runners, statuses, wait_until

pytestmark = [
    pytest.mark.skipif(
        not beat_wired(),
        reason="the runners' atomic service does not call "
        "pynenc_django.beat.scheduler.run_due_periodic_tasks (pynenc_django/trigger)",
    ),
    pytest.mark.timeout(90),
]

EVERY_SEC = 2


def off_the_event_loop[R](query: Callable[[], R]) -> R:
    """Run an ORM query from a thread of its own: Playwright's sync API runs an event
    loop in the test's thread, where Django refuses database access."""
    from django.db import connections

    def run() -> R:
        try:
            return query()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def finished(record: Path) -> int:
    try:
        return sum(line.startswith("finish ") for line in record.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_periodic_task_created_in_the_admin_runs_and_stops_when_disabled(
    live_server: Any,
    app: Pynenc,
    tasks: Any,
    runners: Runners,
    make_user: Callable[..., Any],
    tmp_path: Path,
) -> None:
    chromium = chromium_or_skip()
    from django_celery_beat.models import IntervalSchedule, PeriodicTask
    from playwright.sync_api import expect

    user = make_user(superuser=True)
    every = IntervalSchedule.objects.create(every=EVERY_SEC, period="seconds")
    record = tmp_path / "beat-record.log"
    runner = runners.start(processes=1)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    with admin_page(chromium, live_server.url, user, height=1000) as page:
        # Create it as a person would: the chooser lists pynenc's tasks.
        page.goto(f"{live_server.url}/admin/django_celery_beat/periodictask/add/")
        page.fill("#id_name", "browser beat")
        page.select_option("#id_regtask", RECORDED)
        page.select_option("#id_interval", str(every.pk))
        page.locator("summary", has_text="Arguments").click()
        page.fill("#id_kwargs", json.dumps({"seconds": 0, "record_path": str(record)}))
        page.click("input[name=_save]")
        expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")
        saved = time.monotonic()
        periodic_task = off_the_event_loop(lambda: PeriodicTask.objects.get(name="browser beat"))

        # It runs within seconds, and again at its interval, without a restart.
        wait_until(lambda: finished(record) >= 1, 15, runners.diag)
        first_run_after = time.monotonic() - saved
        wait_until(lambda: finished(record) >= 2, 15, runners.diag)
        page.goto(
            f"{live_server.url}/admin/pynenc_django_beat/periodictaskrun/"
            f"?periodic_task__id__exact={periodic_task.pk}"
        )
        expect(page.locator("#result_list tbody tr").first).to_contain_text("schedule")
        page.screenshot(path=str(SCREENSHOT.with_name("admin-beat-runs.png")), full_page=True)
        page.locator("#result_list a.pynenc-invocation").first.click()
        expect(page.locator("#pynenc-timeline")).to_contain_text("REGISTERED")

        # Disabled in the admin: no due time fires after the save.
        page.goto(
            f"{live_server.url}/admin/django_celery_beat/periodictask/{periodic_task.pk}/change/"
        )
        page.uncheck("#id_enabled")
        page.click("input[name=_save]")
        expect(page.locator("ul.messagelist")).to_contain_text("was changed successfully")

    fired = set(
        PeriodicTaskRun.objects.filter(periodic_task=periodic_task).values_list(
            "invocation_id", flat=True
        )
    )
    assert None not in fired and len(fired) >= 2
    wait_until(
        lambda: set(statuses(app, fired).values()) == {"success"},
        20,
        lambda: f"{statuses(app, fired)}\n{runners.diag()}",
    )
    ran = finished(record)
    assert ran == len(fired), "one run of the task per recorded due time"
    time.sleep(3 * EVERY_SEC)  # three intervals with the task disabled
    assert PeriodicTaskRun.objects.filter(periodic_task=periodic_task).count() == len(fired)
    assert finished(record) == ran
    assert first_run_after < 10, f"first run {first_run_after:.1f}s after the admin's save"
    assert "not run" not in runner.log(), runner.tail()
