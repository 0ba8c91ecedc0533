"""django-celery-beat's admin, speaking pynenc (Django's test client, real database)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from pynenc import Pynenc

from pynenc_django.beat.models import PeriodicTaskRun
from pynenc_django.beat.scheduler import run_due_periodic_tasks
from tests.beat.conftest import ADD

CHANGELIST = "/admin/django_celery_beat/periodictask/"
ADD_URL = f"{CHANGELIST}add/"
RUNS = "/admin/pynenc_django_beat/periodictaskrun/"


def form_data(interval_pk: int, **fields: Any) -> dict[str, Any]:
    """What the add/change form posts, with ``fields`` over the defaults."""
    data = {
        "name": "nightly add",
        "regtask": ADD,
        "task": "",
        "enabled": "on",
        "description": "",
        "interval": str(interval_pk),
        "crontab": "",
        "solar": "",
        "clocked": "",
        "start_time_0": "",
        "start_time_1": "",
        "args": "[]",
        "kwargs": '{"x": 1, "y": 2}',
        "expires_0": "",
        "expires_1": "",
        "expire_seconds": "",
        "queue": "",
        "exchange": "",
        "routing_key": "",
        "priority": "",
        "headers": "{}",
        "_save": "Save",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def interval_pk() -> int:
    from django_celery_beat.models import IntervalSchedule

    return IntervalSchedule.objects.create(every=10, period="seconds").pk


def test_changelist_and_add_form_offer_pynenc_tasks(
    superuser_client: Client, tasks: Any, periodic: Callable[..., Any]
) -> None:
    periodic("listed", every=10)
    changelist = superuser_client.get(CHANGELIST)
    assert changelist.status_code == 200
    body = changelist.content.decode()
    assert "listed" in body
    assert "won&#x27;t be dispatched" not in body and "won't be dispatched" not in body

    add = superuser_client.get(ADD_URL)
    assert add.status_code == 200
    chooser = re.search(r'<select name="regtask".*?</select>', add.content.decode(), re.S)
    assert chooser is not None
    options = re.findall(r'<option value="([^"]*)"', chooser.group(0))
    assert ADD in options
    assert "tests.project.jobs.tasks.recorded_sleep" in options
    assert not [o for o in options if o.startswith(("pynenc.", "pynenc_django.", "celery."))]


def test_form_refuses_an_unknown_task_naming_it(
    superuser_client: Client, tasks: Any, interval_pk: int
) -> None:
    from django_celery_beat.models import PeriodicTask

    response = superuser_client.post(
        ADD_URL, form_data(interval_pk, regtask="", task="proj.tasks.send_report")
    )
    assert response.status_code == 200, "the form is shown again"
    errors = response.context["adminform"].form.errors
    assert "'proj.tasks.send_report' is not a pynenc task" in errors["task"][0]
    assert "not part of an installed app" in errors["task"][0]

    typo = superuser_client.post(
        ADD_URL, form_data(interval_pk, regtask="", task="tests.project.jobs.tasks.ad")
    )
    assert (
        "did you mean 'tests.project.jobs.tasks.add'"
        in typo.context["adminform"].form.errors["task"][0]
    )

    queue = superuser_client.post(ADD_URL, form_data(interval_pk, queue="celery", priority="200"))
    form_errors = queue.context["adminform"].form.errors
    assert "'celery' is not one of pynenc's queues" in form_errors["queue"][0]
    assert "up to 100" in form_errors["priority"][0]
    assert not PeriodicTask.objects.exists()

    created = superuser_client.post(ADD_URL, form_data(interval_pk))
    assert created.status_code == 302
    assert PeriodicTask.objects.get().task == ADD


def test_run_now_enqueues_on_pynenc_and_links_the_invocation(
    superuser_client: Client, app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    from pynenc_django.models import Invocation

    good = periodic("run me", every=3600)
    unknown = periodic("unknown", "proj.tasks.nope", every=3600)

    response = superuser_client.post(
        CHANGELIST,
        {"action": "run_tasks", "_selected_action": [good.pk, unknown.pk]},
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    [run] = PeriodicTaskRun.objects.filter(reason="run now")
    assert any("1 task(s) enqueued on pynenc" in m and run.invocation_id in m for m in messages)
    assert any("'unknown' was not run" in m and "proj.tasks.nope" in m for m in messages)
    assert PeriodicTaskRun.objects.get(periodic_task=unknown).reason == "error"
    invocation = Invocation.objects.for_app(app.app_id).get(invocation_id=run.invocation_id)
    assert invocation.task_id_key == ADD
    good.refresh_from_db()
    assert (good.last_run_at, good.total_run_count) == (None, 0), "run now is not the schedule"

    runs_page = superuser_client.get(RUNS)
    assert runs_page.status_code == 200
    page = runs_page.content.decode()
    link = f"/admin/pynenc_django/invocation/{invocation.pk}/change/"
    assert f'href="{link}"' in page
    detail = superuser_client.get(link)
    assert detail.status_code == 200
    assert run.invocation_id in detail.content.decode()

    run_page = superuser_client.get(f"{RUNS}{run.pk}/change/")
    assert run_page.status_code == 200
    assert f'href="{link}"' in run_page.content.decode()
    filtered = superuser_client.get(RUNS, {"periodic_task__id__exact": good.pk})
    assert filtered.status_code == 200
    assert "run me" in filtered.content.decode()


def test_saving_the_form_keeps_what_the_evaluator_wrote(
    superuser_client: Client, app: Pynenc, tasks: Any, periodic: Callable[..., Any]
) -> None:
    """django-celery-beat's save writes back the ``last_run_at`` the form loaded; a run
    between loading and saving the form must survive the save."""
    from django_celery_beat.models import PeriodicTask

    last = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    edited = periodic("edited", every=10, last_run_at=last)
    page = superuser_client.get(f"{CHANGELIST}{edited.pk}/change/")
    assert page.status_code == 200
    assert run_due_periodic_tasks(app, last + timedelta(seconds=10)) == 1

    saved = superuser_client.post(
        f"{CHANGELIST}{edited.pk}/change/",
        form_data(edited.interval_id, name="edited", description="now described"),
    )
    assert saved.status_code == 302
    row = PeriodicTask.objects.get(pk=edited.pk)
    assert row.description == "now described"
    assert (row.last_run_at, row.total_run_count) == (last + timedelta(seconds=10), 1)

    disabled = superuser_client.post(
        f"{CHANGELIST}{edited.pk}/change/",
        form_data(edited.interval_id, name="edited", enabled=None),
    )
    assert disabled.status_code == 302
    row.refresh_from_db()
    assert (row.enabled, row.last_run_at) == (False, None), "as django-celery-beat disables"
