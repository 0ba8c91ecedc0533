"""Rerun, cancel and reroute, as pynenc's state machine allows them."""

from __future__ import annotations

import sys
from collections.abc import Generator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pynenc_django import models as m

INVOCATIONS = reverse("admin:pynenc_django_invocation_changelist")
#: A ``seed`` package with the tasks ``pynenc_seed``'s rows name (``seed.tasks.*``).
SEED_CODE = Path(__file__).parent / "seed_code"


@pytest.fixture
def seed_tasks(monkeypatch: pytest.MonkeyPatch) -> Generator[None, None, None]:
    """Make the seeded rows' tasks importable, as a deployed project's tasks are: a rerun
    is refused for a task the admin's process cannot import."""
    monkeypatch.syspath_prepend(str(SEED_CODE))
    yield
    for name in ("seed.tasks", "seed"):
        sys.modules.pop(name, None)


def act(client: Client, app_id: str, action: str, invocations: list[Any], **extra: Any) -> Any:
    return client.post(
        f"{INVOCATIONS}?app_id={app_id}",
        {"action": action, "_selected_action": [i.pk for i in invocations], **extra},
        follow=True,
    )


def one(app_id: str, **filters: Any) -> m.Invocation:
    inv = m.Invocation.objects.filter(app_id=app_id, **filters).order_by("pk").first()
    assert inv is not None, filters
    return inv


def user_of(client: Client) -> Any:
    from django.contrib.auth import get_user

    return get_user(client)


def test_rerun_asks_first_then_links_the_new_invocation(
    fresh_app: str, superuser_client: Client, seed_tasks: None
) -> None:
    original = one(fresh_app, status="success", task_id_key="seed.tasks.send_email")
    page = act(superuser_client, fresh_app, "rerun_invocations", [original])
    html = page.content.decode()
    assert "Rerun invocations" in html and 'name="post" value="yes"' in html
    assert "seed.tasks.send_email</code> → fast" in html  # the queue from the app's config
    assert m.Invocation.objects.filter(app_id=fresh_app).count() == 60  # nothing yet

    done = act(superuser_client, fresh_app, "rerun_invocations", [original], post="yes")
    assert "Rerun: done for 1 of 1 selected invocation." in done.content.decode()
    new = (
        m.Invocation.objects.filter(app_id=fresh_app)
        .exclude(invocation_id__startswith=fresh_app[:20])
        .get()
    )
    assert new.status == "registered" and new.call_id_key == original.call_id_key
    state = m.StateInvocation.objects.get(app_id=fresh_app, invocation_id=new.invocation_id)
    old_state = m.StateInvocation.objects.get(
        app_id=fresh_app, invocation_id=original.invocation_id
    )
    assert state.serialized_arguments == old_state.serialized_arguments
    history = m.InvocationHistory.objects.get(app_id=fresh_app, invocation_id=new.invocation_id)
    username = user_of(superuser_client).get_username()
    assert history.status == "registered"
    assert history.registered_by_inv_id == original.invocation_id
    assert history.runner_context_id == f"django-admin:{username}"
    assert (
        m.RunnerContextRecord.objects.get(
            app_id=fresh_app, runner_id=f"django-admin:{username}"
        ).runner_cls
        == "DjangoAdmin"
    )
    message = m.BrokerMessage.objects.get(app_id=fresh_app, invocation_id=new.invocation_id)
    assert message.queue == "fast"
    logs = LogEntry.objects.filter(user=user_of(superuser_client))
    assert logs.get(action_flag=CHANGE, object_id=str(original.pk)).change_message.startswith(
        "Rerun: rerun as"
    )
    assert logs.get(action_flag=ADDITION, object_id=str(new.pk)).change_message == (
        f"rerun of {original.invocation_id}"
    )
    # The new invocation's page names the original.
    detail = superuser_client.get(
        reverse("admin:pynenc_django_invocation_change", args=[new.pk])
    ).content.decode()
    assert original.invocation_id in detail and "DjangoAdmin" in detail


def test_rerun_into_another_queue(
    fresh_app: str, superuser_client: Client, seed_tasks: None
) -> None:
    original = one(fresh_app, status="success", task_id_key="seed.tasks.resize_image")
    act(superuser_client, fresh_app, "rerun_invocations", [original], post="yes", queue="slow")
    new = m.Invocation.objects.filter(app_id=fresh_app, call_id_key=original.call_id_key).exclude(
        pk=original.pk
    )
    assert (
        m.BrokerMessage.objects.get(app_id=fresh_app, invocation_id=new.get().invocation_id).queue
        == "slow"
    )
    html = act(
        superuser_client, fresh_app, "rerun_invocations", [original], post="yes", queue="nope"
    ).content.decode()
    assert "Unknown queue" in html


def test_rerun_refused_when_status_triggers_watch_the_task(
    fresh_app: str, superuser_client: Client, seed_tasks: None
) -> None:
    original = one(fresh_app, status="success")
    m.TriggerConditionEntry.objects.create(
        app_id=fresh_app,
        condition_key="k" * 64,
        condition_id="status:x",
        context_type="StatusContext",
        condition_json="{}",
    )
    m.TriggerSourceTaskCondition.objects.create(
        app_id=fresh_app, task_id_key=original.task_id_key, condition_key="k" * 64
    )
    html = act(
        superuser_client, fresh_app, "rerun_invocations", [original], post="yes"
    ).content.decode()
    assert "has status triggers" in html
    assert (
        not m.Invocation.objects.filter(app_id=fresh_app, call_id_key=original.call_id_key)
        .exclude(pk=original.pk)
        .exists()
    )


def _retask(inv: m.Invocation, task_id_key: str) -> None:
    """Make ``inv`` an invocation of ``task_id_key``, as if a deploy had renamed its task."""
    call_id_key = f"{task_id_key}:{inv.call_id_key.rsplit(':', 1)[1]}"
    for model in (m.Invocation, m.StateInvocation):
        model.objects.filter(app_id=inv.app_id, invocation_id=inv.invocation_id).update(
            task_id_key=task_id_key, call_id_key=call_id_key
        )
    inv.refresh_from_db()


def test_rerun_refuses_a_task_that_cannot_be_imported(
    fresh_app: str, superuser_client: Client, seed_tasks: None
) -> None:
    """A deploy removed a task's module, or the function from its module: rerunning its
    invocation would queue a poison message, so the admin refuses it and says why, while
    the other selected invocations are rerun."""
    good = one(fresh_app, status="success", task_id_key="seed.tasks.send_email")
    no_module, no_function = (
        m.Invocation.objects.filter(app_id=fresh_app, status__in=["success", "failed"])
        .exclude(pk=good.pk)
        .order_by("pk")[:2]
    )
    _retask(no_module, "pynenc_django_gone_module.tasks.gone")
    _retask(no_function, "seed.tasks.renamed_away")
    invocations_before = m.Invocation.objects.filter(app_id=fresh_app).count()
    messages_before = set(
        m.BrokerMessage.objects.filter(app_id=fresh_app).values_list("invocation_id", flat=True)
    )

    html = act(
        superuser_client, fresh_app, "rerun_invocations", [good, no_module, no_function], post="yes"
    ).content.decode()

    assert "Rerun: done for 1 of 3 selected invocations." in html
    assert (
        f"Invocation {no_module.invocation_id}: not rerun: task "
        "pynenc_django_gone_module.tasks.gone cannot be imported here "
        "(ModuleNotFoundError: No module named &#x27;pynenc_django_gone_module&#x27;)"
    ) in html
    assert (
        f"Invocation {no_function.invocation_id}: not rerun: task seed.tasks.renamed_away "
        "cannot be imported here (AttributeError: module &#x27;seed.tasks&#x27; has no "
        "attribute &#x27;renamed_away&#x27;)"
    ) in html
    # Exactly one new invocation, of the good one, and one new broker message, for it.
    assert m.Invocation.objects.filter(app_id=fresh_app).count() == invocations_before + 1
    new = m.InvocationHistory.objects.get(
        app_id=fresh_app, status="registered", runner_context_id__startswith="django-admin:"
    )
    assert new.registered_by_inv_id == good.invocation_id
    messages_after = set(
        m.BrokerMessage.objects.filter(app_id=fresh_app).values_list("invocation_id", flat=True)
    )
    assert messages_after - messages_before == {new.invocation_id}
    for bad in (no_module, no_function):
        assert not m.Invocation.objects.filter(
            app_id=fresh_app, task_id_key=bad.task_id_key
        ).exclude(pk=bad.pk)
        assert not m.StateInvocation.objects.filter(
            app_id=fresh_app, call_id_key=bad.call_id_key
        ).exclude(invocation_id=bad.invocation_id)
    logs = LogEntry.objects.filter(user=user_of(superuser_client), action_flag=CHANGE)
    assert list(logs.values_list("object_id", flat=True)) == [str(good.pk)]


def test_task_import_error_resolves_like_a_worker(seed_tasks: None) -> None:
    from pynenc_django.admin.actions import task_import_error

    assert task_import_error("any-app", "seed.tasks.notify") is None
    assert task_import_error("any-app", "tests.project.jobs.tasks.add") is None
    assert task_import_error("any-app", "seed.tasks.Pynenc") == (
        "ValueError: seed.tasks.Pynenc is a type, not a pynenc task"
    )
    assert task_import_error("any-app", "nodots") == (
        "ValueError: Invalid TaskId key format: nodots"
    )


def test_cancel_registered_only(fresh_app: str, superuser_client: Client) -> None:
    registered = one(fresh_app, status="registered")
    running = one(fresh_app, status="running")
    waiter = one(fresh_app, status="success")
    m.BlockingEdge.objects.create(
        app_id=fresh_app,
        waiter_id=waiter.invocation_id,
        waited_id=registered.invocation_id,
        created_at=timezone.now(),
    )
    page = act(superuser_client, fresh_app, "cancel_invocations", [registered, running])
    html = page.content.decode()
    assert "only its owning runner may kill" in html and "1 of 2 selected" in html
    html = act(
        superuser_client, fresh_app, "cancel_invocations", [registered, running], post="yes"
    ).content.decode()
    assert "Cancel: done for 1 of 2 selected invocations." in html
    registered.refresh_from_db()
    running.refresh_from_db()
    assert registered.status == "concurrency_controlled_final"
    assert registered.auto_purge_at is not None
    assert running.status == "running"
    assert not m.BlockingEdge.objects.filter(
        app_id=fresh_app, waited_id=registered.invocation_id
    ).exists()
    assert not m.BrokerMessage.objects.filter(
        app_id=fresh_app, invocation_id=registered.invocation_id
    ).exists()
    last = m.InvocationHistory.objects.filter(
        app_id=fresh_app, invocation_id=registered.invocation_id
    ).latest("timestamp")
    assert last.status == "concurrency_controlled_final"
    assert last.runner_context_id.startswith("django-admin:")


def test_reroute_follows_pynenc_rules(fresh_app: str, superuser_client: Client) -> None:
    killed = one(fresh_app, status="success")
    m.Invocation.objects.filter(pk=killed.pk).update(status="killed", status_runner_id=None)
    dead_owned = one(fresh_app, status="running")
    m.Invocation.objects.filter(pk=dead_owned.pk).update(status_runner_id="seed-runner-3-worker-0")
    alive_owned = (
        m.Invocation.objects.filter(app_id=fresh_app, status="running")
        .exclude(pk=dead_owned.pk)
        .first()
    )
    m.Invocation.objects.filter(pk=alive_owned.pk).update(status_runner_id="seed-runner-0-worker-0")
    finished = one(fresh_app, status="failed")
    selected = [killed, dead_owned, alive_owned, finished]
    html = act(superuser_client, fresh_app, "reroute_invocations", selected).content.decode()
    assert "is alive" in html and "does not reroute a failed" in html
    html = act(
        superuser_client, fresh_app, "reroute_invocations", selected, post="yes"
    ).content.decode()
    assert "Reroute: done for 2 of 4 selected invocations." in html
    for inv, expected in ((killed, "rerouted"), (dead_owned, "rerouted")):
        inv.refresh_from_db()
        assert inv.status == expected and inv.status_runner_id is None
        assert m.BrokerMessage.objects.filter(
            app_id=fresh_app, invocation_id=inv.invocation_id
        ).exists()
    path = list(
        m.InvocationHistory.objects.filter(app_id=fresh_app, invocation_id=dead_owned.invocation_id)
        .order_by("timestamp", "id")
        .values_list("status", flat=True)
    )
    assert path[-2:] == ["running_recovery", "rerouted"]
    alive_owned.refresh_from_db()
    assert alive_owned.status == "running"


def test_reroute_stale_pending(fresh_app: str, superuser_client: Client) -> None:
    pending = one(fresh_app, status="running")
    m.Invocation.objects.filter(pk=pending.pk).update(
        status="pending",
        status_runner_id="seed-runner-0-worker-1",
        status_timestamp=timezone.now() - timedelta(minutes=5),
    )
    act(superuser_client, fresh_app, "reroute_invocations", [pending], post="yes")
    pending.refresh_from_db()
    assert pending.status == "rerouted"


def test_too_many_selected_is_refused(
    fresh_app: str, superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynenc_django.admin import actions

    monkeypatch.setattr(actions, "MAX_SELECTED", 2)
    invs = list(m.Invocation.objects.filter(app_id=fresh_app, status="registered")[:3])
    if len(invs) < 3:
        invs = list(m.Invocation.objects.filter(app_id=fresh_app)[:3])
    html = act(superuser_client, fresh_app, "cancel_invocations", invs, post="yes").content.decode()
    assert "Select at most 2 invocations" in html
