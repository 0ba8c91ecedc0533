"""``manage.py pynenc_runner --name``: a real runner stores its name with its heartbeat and
its workers', and the admin shows it with host and pid. A bad name changes nothing."""

from __future__ import annotations

import signal
import socket
from collections.abc import Generator
from types import ModuleType
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from pynenc import Pynenc

from tests.runner.conftest import Runners, wait_until


@pytest.fixture
def admin_client() -> Generator[Client, None, None]:
    import uuid

    from django.contrib.auth.models import User

    user = User.objects.create_user(
        username=f"name-{uuid.uuid4().hex[:12]}", password="pw", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(user)
    yield client
    user.delete()


def heartbeats(app: Pynenc) -> dict[str, str]:
    from pynenc_django.models import RunnerHeartbeat

    return dict(RunnerHeartbeat.objects.filter(app_id=app.app_id).values_list("runner_id", "name"))


def get(client: Client, url: str, data: dict[str, Any]) -> str:
    response = client.get(url, data)
    assert response.status_code == 200, response.content[:2000]
    return response.content.decode()


def test_named_runner_and_its_workers_in_heartbeats_and_admin(
    app: Pynenc, runners: Runners, admin_client: Client
) -> None:
    named = runners.start("--name", "blue <1>", processes=2)
    unnamed = runners.start(processes=1)
    assert "  name       blue <1>\n" in named.log(), named.tail()
    assert "  name       -\n" in unnamed.log(), unnamed.tail()
    runner_id, workers = named.runner_id, set(named.workers().values())
    ours = {runner_id, *workers}

    def all_named() -> bool:
        beats = heartbeats(app)
        return ours <= set(beats) and unnamed.runner_id in beats

    wait_until(all_named, 60, runners.diag)
    beats = heartbeats(app)
    assert {beats[r] for r in ours} == {"blue <1>"}, beats
    assert beats[unnamed.runner_id] == "", beats

    host = socket.gethostname()
    runner_list = reverse("admin:pynenc_django_runnerheartbeat_changelist")
    html = get(admin_client, runner_list, {"app_id": app.app_id, "q": runner_id[:8]})
    assert ">blue &lt;1&gt;</td>" in html and runner_id in html
    html = get(admin_client, reverse("admin:pynenc_django_overview"), {"app_id": app.app_id})
    assert (
        f'title="runner {runner_id}">blue &lt;1&gt;</a> <small>({host}, pid {named.pid})</small>'
    ) in html, "the overview's live runners: name, host and the runner process's pid"
    assert f"<code>{unnamed.runner_id[:8]}</code></a> <small>({host}, pid {unnamed.pid})" in html


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\there"])
def test_bad_name_exits_2_and_registers_nothing(app: Pynenc, runners: Runners, name: str) -> None:
    process = runners.start("--name", name, wait=False)
    assert process.wait_exit(60) == 2, process.tail()
    log = process.log()
    assert "argument --name" in log and "is not a runner name" in log, process.tail()
    assert "Traceback" not in log, process.tail()
    assert heartbeats(app) == {}


def test_a_runner_stopped_cleanly_keeps_its_name_in_the_admin(
    app: Pynenc, runners: Runners, tasks: ModuleType, admin_client: Client
) -> None:
    """A clean stop drops the runner's heartbeats (the name's first home); what it ran
    still names it, from its runner contexts."""
    from pynenc_django.models import Invocation, RunnerContextRecord

    named = runners.start("--name", "green-2", processes=1)
    runner_id, workers = named.runner_id, set(named.workers().values())
    invocation = tasks.add(20, 22)
    assert invocation.result == 42
    named.send(signal.SIGTERM)
    assert named.wait_exit(30) == 0, named.tail()
    assert heartbeats(app) == {}, "a clean stop drops its heartbeats"

    names = dict(
        RunnerContextRecord.objects.filter(app_id=app.app_id).values_list("runner_id", "name")
    )
    assert {names.get(r) for r in {runner_id, *workers}} == {"green-2"}, names
    contexts = reverse("admin:pynenc_django_runnercontextrecord_changelist")
    (worker_id,) = workers
    html = get(admin_client, contexts, {"app_id": app.app_id, "q": worker_id[:8]})
    assert worker_id in html and ">green-2</td>" in html, html[-3000:]
    pk = Invocation.objects.get(app_id=app.app_id, invocation_id=invocation.invocation_id).pk
    page = get(admin_client, reverse("admin:pynenc_django_invocation_change", args=[pk]), {})
    assert "<strong>green-2</strong>" in page
