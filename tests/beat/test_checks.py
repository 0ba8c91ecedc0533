"""``manage.py check`` names periodic tasks pynenc cannot run as configured."""

from __future__ import annotations

import io
from collections.abc import Callable, Generator
from typing import Any

import pytest
from django.core.management import call_command
from pynenc import Pynenc

from pynenc_django.beat.checks import check_periodic_tasks
from tests.beat.conftest import ADD


def on_reports_queue(x: int) -> int:
    return x


@pytest.fixture
def reports_queue(app: Pynenc) -> Generator[None, None, None]:
    task = app.task(queue="reports")(on_reports_queue)
    yield
    app._tasks.pop(task.task_id, None)


def test_check_names_each_problem(
    app: Pynenc, tasks: Any, periodic: Callable[..., Any], reports_queue: None
) -> None:
    periodic("fine", every=10)
    periodic("unknown", "proj.tasks.nope", every=10)
    periodic("disabled unknown", "proj.tasks.gone", every=10, enabled=False)
    periodic("celery queue", every=10, queue="celery")
    periodic("other queue", every=10, queue="reports")
    periodic("loud", every=10, priority=200)
    periodic("amqp", every=10, routing_key="orders", headers='{"h": 1}')

    found = {(m.id, m.obj.name): m.msg for m in check_periodic_tasks()}

    assert set(found) == {
        ("pynenc_django_beat.W001", "unknown"),
        ("pynenc_django_beat.W002", "celery queue"),
        ("pynenc_django_beat.W003", "other queue"),
        ("pynenc_django_beat.W004", "loud"),
        ("pynenc_django_beat.W005", "amqp"),
    }
    assert (
        "'proj.tasks.nope', which pynenc does not know"
        in found[("pynenc_django_beat.W001", "unknown")]
    )
    assert "the task's own queue is 'default'" in found[("pynenc_django_beat.W003", "other queue")]
    assert "routing_key, headers" in found[("pynenc_django_beat.W005", "amqp")]

    out, err = io.StringIO(), io.StringIO()
    call_command("check", stdout=out, stderr=err)
    shown = out.getvalue() + err.getvalue()
    assert "pynenc_django_beat.W001" in shown and "proj.tasks.nope" in shown


def test_no_message_for_good_rows(app: Pynenc, tasks: Any, periodic: Callable[..., Any]) -> None:
    periodic("fine", ADD, every=10, queue="default", priority=5)
    assert check_periodic_tasks() == []
