"""Fixtures for the django-celery-beat schedule (``pynenc_django.beat``).

django-celery-beat's tables have no ``app_id``: every enabled ``PeriodicTask`` is the
project's, so each test starts and ends with them empty. The project's app
(``tests.project``'s tasks, app id ``pynenc-django-runner-tests``) is the one that
evaluates them, purged around each test as in the runner tests.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

# Fixtures shared with the runner and admin tests (imported: pytest registers them here).
from tests.admin.conftest import make_user, superuser_client  # noqa: F401
from tests.runner.conftest import app, runners, tasks  # noqa: F401

ADD = "tests.project.jobs.tasks.add"
RECORDED = "tests.project.jobs.tasks.recorded_sleep"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: runs runner processes for minutes or restarts the database server"
    )


def beat_wired() -> bool:
    """Whether the runners' atomic service calls the evaluator (the trigger loop's
    ``run_due_periodic_tasks``): needed by the tests with real runners."""
    import pynenc_django.trigger

    package = Path(pynenc_django.trigger.__file__).parent
    return any("run_due_periodic_tasks" in path.read_text() for path in package.glob("*.py"))


def clear_beat_tables() -> None:
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        SolarSchedule,
    )

    from pynenc_django.beat.models import PeriodicTaskRun

    PeriodicTaskRun.objects.all().delete()
    PeriodicTask.objects.all().delete()
    for model in (IntervalSchedule, CrontabSchedule, ClockedSchedule, SolarSchedule):
        model.objects.all().delete()


@pytest.fixture(autouse=True)
def _empty_beat_tables() -> Generator[None, None, None]:
    clear_beat_tables()
    yield
    clear_beat_tables()


@pytest.fixture
def periodic() -> Callable[..., Any]:
    """``periodic(name, task=ADD, every=10 | crontab={...} | clocked=dt, last_run_at=...,
    date_changed=..., **fields)``: a PeriodicTask as django-celery-beat saves it, with
    ``last_run_at``/``date_changed`` then set as a test needs them."""
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
    )

    def make(
        name: str,
        task: str = ADD,
        *,
        every: int | None = None,
        period: str = "seconds",
        crontab: dict[str, Any] | None = None,
        clocked: datetime | None = None,
        last_run_at: datetime | None = None,
        date_changed: datetime | None = None,
        **fields: Any,
    ) -> PeriodicTask:
        if every is not None:
            fields["interval"] = IntervalSchedule.objects.create(every=every, period=period)
        if crontab is not None:
            fields["crontab"] = CrontabSchedule.objects.create(**crontab)
        if clocked is not None:
            fields["clocked"] = ClockedSchedule.objects.create(clocked_time=clocked)
            fields.setdefault("one_off", True)
        fields.setdefault("kwargs", '{"x": 1, "y": 2}' if task == ADD else "{}")
        periodic_task = PeriodicTask.objects.create(name=name, task=task, **fields)
        updates: dict[str, Any] = {}
        if last_run_at is not None:
            updates["last_run_at"] = last_run_at
        if date_changed is not None:
            updates["date_changed"] = date_changed
        if updates:
            PeriodicTask.objects.filter(pk=periodic_task.pk).update(**updates)
        periodic_task.refresh_from_db()
        return periodic_task

    return make
