"""Every admin page renders, stays within its query budget, and shows what it should.

The budget (10 queries) includes the session and user lookups of the logged-in client.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from pynenc_django import models as m

MAX_QUERIES = 10

CHANGELISTS = [
    m.Invocation,
    m.BlockingEdge,
    m.RunnerHeartbeat,
    m.AtomicServiceExecution,
    m.RunnerContextRecord,
    m.BrokerMessage,
    m.TriggerDefinitionEntry,
    m.TriggerConditionEntry,
    m.EventEntry,
    m.TriggerRunEntry,
]


def changelist(model: type[Any]) -> str:
    return reverse(f"admin:pynenc_django_{model._meta.model_name}_changelist")


def change(obj: Any) -> str:
    return reverse(f"admin:pynenc_django_{obj._meta.model_name}_change", args=[obj.pk])


def get(client: Client, url: str, data: dict[str, Any] | None = None) -> str:
    response = client.get(url, data)
    assert response.status_code == 200, response.content[:2000]
    return response.content.decode()


@pytest.mark.parametrize("model", CHANGELISTS, ids=lambda m: m.__name__)
def test_changelist_within_query_budget(
    model: type[Any], seeded_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, changelist(model), {"app_id": seeded_app})
    assert seeded_app in html
    assert f"/{model._meta.model_name}/add/" not in html  # machine-written rows: no add


@pytest.mark.parametrize("model", CHANGELISTS, ids=lambda m: m.__name__)
def test_detail_within_query_budget(
    model: type[Any], seeded_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.get_for_model(model)  # cached per process, as in a running site
    obj = model.objects.filter(app_id=seeded_app).order_by("pk").last()
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, change(obj))
    assert 'name="_save"' not in html  # read-only: nothing to save


def test_invocation_detail_shows_everything(
    seeded_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    # Every 50th invocation is a running parent waiting for its five children.
    parent_id = f"{seeded_app[:20]}-inv-000000000"
    m.Invocation.objects.filter(app_id=seeded_app, invocation_id=parent_id).update(
        status="failed", status_runner_id=None
    )
    m.InvocationException.objects.update_or_create(
        app_id=seeded_app,
        invocation_id=parent_id,
        defaults={
            "exception": '{"error_name": "ValueError", "pynenc_error": false, "error_data": '
            '"{\\"py/reduce\\": [{\\"py/type\\": \\"builtins.ValueError\\"}, '
            '{\\"py/tuple\\": [\\"bad <script>alert(1)</script>\\"]}, {}]}"}'
        },
    )
    inv = m.Invocation.objects.get(app_id=seeded_app, invocation_id=parent_id)
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, change(inv))
    assert "Status history" in html and "pynenc-timeline" in html
    assert "REGISTERED" in html and "FAILED" in html
    assert "ValueError" in html
    assert "<script>alert(1)</script>" not in html  # stored text is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "-inv-000000001" in html  # a child and the edge it waits for
    assert "Waits for" in html and "Parent and children" in html
    assert "&lt;u" in html  # argument text shown, escaped (JSON pretty-printed)


def test_invocation_detail_of_child_links_parent_and_owner(
    seeded_app: str, superuser_client: Client
) -> None:
    child = m.Invocation.objects.get(
        app_id=seeded_app, invocation_id=f"{seeded_app[:20]}-inv-000000051"
    )
    m.Invocation.objects.filter(pk=child.pk).update(
        status="running", status_runner_id="seed-runner-0-worker-0"
    )
    html = get(superuser_client, change(child))
    assert f"{seeded_app[:20]}-inv-000000050" in html  # parent
    assert "seed-runner-0-worker-0" in html and "alive" in html
    assert "Child of DjangoPersistentProcessRunner" in html


def test_invocation_filters(seeded_app: str, superuser_client: Client) -> None:
    url = changelist(m.Invocation)
    html = get(superuser_client, url, {"app_id": seeded_app, "status": "success"})
    assert "SUCCESS" in html and ">FAILED<" not in html
    html = get(superuser_client, url, {"app_id": seeded_app, "task": "seed.tasks.send_email"})
    assert "seed.tasks.resize_image</td>" not in html
    assert "seed.tasks.send_email" in html
    # The queue comes from the app's configuration (seeded AppInfo): fast = send_email + notify.
    html = get(superuser_client, url, {"app_id": seeded_app, "queue": "fast"})
    assert "seed.tasks.charge_card</td>" not in html
    assert ">fast<" in html or "fast</span>" in html
    html = get(superuser_client, url, {"app_id": seeded_app, "queue": "payments"})
    assert "seed.tasks.charge_card" in html


def test_invocation_filter_choices_need_no_distinct_scan(
    seeded_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        html = get(superuser_client, changelist(m.Invocation), {"app_id": seeded_app})
    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert "SELECT DISTINCT" not in sql or connection.vendor == "mysql"
    assert "COUNT(*)" in sql and "LIMIT" in sql  # the capped count
    for task in ("seed.tasks.send_email", "seed.tasks.cleanup"):
        assert f"task={task}" in html or f"task={task.replace('.', '.')}" in html
    for status in ("registered", "running", "concurrency_controlled_final"):
        assert f"status={status}" in html
    for queue in ("default", "fast", "slow", "payments"):
        assert f"queue={queue}" in html


def test_invocation_search_is_exact(seeded_app: str, superuser_client: Client) -> None:
    target = f"{seeded_app[:20]}-inv-000000007"
    html = get(superuser_client, changelist(m.Invocation), {"app_id": seeded_app, "q": target})
    assert target in html and "-inv-000000017" not in html
    html = get(superuser_client, changelist(m.Invocation), {"app_id": seeded_app, "q": target[:-1]})
    assert target not in html  # no substring match
    call_id = m.Invocation.objects.get(app_id=seeded_app, invocation_id=target).call_id_key
    html = get(superuser_client, changelist(m.Invocation), {"app_id": seeded_app, "q": call_id})
    assert target in html


def test_date_hierarchy_without_distinct(seeded_app: str, superuser_client: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    inv = m.Invocation.objects.filter(app_id=seeded_app).first()
    at = inv.registered_at
    url = changelist(m.Invocation)
    html = get(superuser_client, url, {"app_id": seeded_app})
    assert f"registered_at__year={at.year}" in html
    html = get(superuser_client, url, {"app_id": seeded_app, "registered_at__year": at.year})
    assert f"registered_at__month={at.month}" in html
    with CaptureQueriesContext(connection) as queries:
        html = get(
            superuser_client,
            url,
            {
                "app_id": seeded_app,
                "registered_at__year": at.year,
                "registered_at__month": at.month,
            },
        )
    assert "registered_at__day=1" in html
    # Django's date_hierarchy would list days with SELECT DISTINCT over registered_at.
    assert not any(
        "DISTINCT" in q["sql"].upper() and "REGISTERED_AT" in q["sql"].upper()
        for q in queries.captured_queries
    )
    html = get(
        superuser_client,
        url,
        {
            "app_id": seeded_app,
            "registered_at__year": at.year,
            "registered_at__month": at.month,
            "registered_at__day": at.day,
        },
    )
    assert inv.invocation_id[:10] in html


def test_deep_pages_fetch_keys_first(
    seeded_app: str, superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynenc_django.admin import base

    monkeypatch.setattr(base, "DEEP_OFFSET", 10)
    url = changelist(m.Invocation)
    first = get(superuser_client, url, {"app_id": seeded_app, "p": 1})
    last = get(superuser_client, url, {"app_id": seeded_app, "p": 3})
    assert "-inv-000000149" in first  # newest first
    assert "-inv-000000000" in last and "-inv-000000149" not in last


def test_estimated_count_beyond_the_cap(
    seeded_app: str, superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection

    from pynenc_django.admin import base

    monkeypatch.setattr(base, "COUNT_CAP", 20)
    html = get(superuser_client, changelist(m.Invocation), {"app_id": seeded_app})
    if connection.vendor == "sqlite":
        assert "about" not in html  # no estimate on SQLite: exact count
    else:
        assert "about" in html


def test_default_app_and_app_filter(seeded_app: str, superuser_client: Client) -> None:
    html = get(superuser_client, changelist(m.Invocation))
    assert "app id" in html  # the filter lists apps; one is selected, there is no "All"
    assert f"app_id={seeded_app}" in html


def test_blocked_executions_show_reason_and_summary(
    seeded_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    url = changelist(m.AtomicServiceExecution)
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, url, {"app_id": seeded_app, "status": "blocked"})
    assert "prior_running:seed-run-" in html and "BLOCKED" in html
    assert "COMPLETED</span>" not in html
    assert "Last completed run" in html and "Blocked, last hour" in html
    html = get(superuser_client, url, {"app_id": seeded_app, "status": "abandoned"})
    assert "reaped: runner" in html
    html = get(superuser_client, url, {"app_id": seeded_app, "runner": "seed-runner-1"})
    assert "seed-runner-0</code></a></td>" not in html


def test_runners_alive_and_dead(seeded_app: str, superuser_client: Client) -> None:
    url = changelist(m.RunnerHeartbeat)
    html = get(superuser_client, url, {"app_id": seeded_app, "alive": "no"})
    assert "seed-runner-3" in html and "DEAD" in html and "ALIVE" not in html
    html = get(superuser_client, url, {"app_id": seeded_app, "alive": "yes"})
    assert "seed-runner-0" in html and "seed-runner-3<" not in html
    assert "host-0" in html  # hostname from the runner context
    runner = m.RunnerHeartbeat.objects.get(app_id=seeded_app, runner_id="seed-runner-0")
    html = get(superuser_client, change(runner))
    assert "seed-runner-0-worker-1" in html and "Recent atomic-service executions" in html


def test_overview(
    seeded_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    url = reverse("admin:pynenc_django_overview")
    # The stuck-wait check (the seeded waits are old): edges, their invocations, busy
    # workers, runners, the shown waits' queues.
    with django_assert_max_num_queries(MAX_QUERIES + 5):
        html = get(superuser_client, url, {"app_id": seeded_app})
    assert "Invocations by status" in html and "Queue depth" in html
    assert "Oldest waiting invocation" in html
    assert "alive" in html and "dead" in html
    assert "Blocked executions, last hour" in html
    assert 'id="pynenc-stuck-waits"' in html and "stuck wait: invocation" in html
    queued = set(m.BrokerMessage.objects.filter(app_id=seeded_app).values_list("queue", flat=True))
    assert queued
    for queue in queued:
        assert f">{queue}<" in html
    index = get(superuser_client, reverse("admin:index"))
    assert url in index
    app_index = get(superuser_client, reverse("admin:app_list", args=["pynenc_django"]))
    assert url in app_index


def test_event_and_trigger_run_link_invocations(seeded_app: str, superuser_client: Client) -> None:
    event = m.EventEntry.objects.filter(app_id=seeded_app).order_by("pk").first()
    html = get(superuser_client, change(event))
    assert "Invocations triggered by this event" in html and "-inv-000000000" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html  # payload escaped
    run = m.TriggerRunEntry.objects.filter(app_id=seeded_app).order_by("pk").first()
    html = get(superuser_client, change(run))
    assert "What made it fire" in html and "-inv-000000000" in html
    trigger = m.TriggerDefinitionEntry.objects.filter(app_id=seeded_app).first()
    html = get(superuser_client, change(trigger))
    assert "event:order.created" in html


def test_stored_text_is_escaped_in_lists(seeded_app: str, superuser_client: Client) -> None:
    execution = m.AtomicServiceExecution.objects.filter(app_id=seeded_app, status="blocked").first()
    m.AtomicServiceExecution.objects.filter(pk=execution.pk).update(
        reason="<img src=x onerror=alert(1)>"
    )
    html = get(
        superuser_client,
        changelist(m.AtomicServiceExecution),
        {"app_id": seeded_app, "q": execution.run_id},
    )
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.parametrize("model", CHANGELISTS, ids=lambda m: m.__name__)
def test_pages_of_a_view_only_staff_user_within_budget(
    model: type[Any],
    seeded_app: str,
    client_for: Any,
    django_assert_max_num_queries: Any,
) -> None:
    """A non-superuser's permissions cost two more queries (user and group permissions,
    cached for the request); the budget holds for them too."""
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.get_for_model(model)  # cached per process, as in a running site
    client = client_for(f"pynenc_django.view_{model._meta.model_name}")
    with django_assert_max_num_queries(MAX_QUERIES):
        get(client, changelist(model), {"app_id": seeded_app})
    obj = model.objects.filter(app_id=seeded_app).order_by("pk").last()
    with django_assert_max_num_queries(MAX_QUERIES):
        get(client, change(obj))


def test_runner_owned_counts_are_capped(
    seeded_app: str, superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynenc_django.admin import orchestrator

    owner = "seed-runner-0-worker-0"
    ids = list(
        m.Invocation.objects.filter(app_id=seeded_app, status="success").values_list(
            "pk", flat=True
        )[:5]
    )
    m.Invocation.objects.filter(pk__in=ids).update(status="running", status_runner_id=owner)
    monkeypatch.setattr(orchestrator, "OWNED_CAP", 3)
    html = get(superuser_client, changelist(m.RunnerHeartbeat), {"app_id": seeded_app, "q": owner})
    assert f'q={owner}">3+</a>' in html
