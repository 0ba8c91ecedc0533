"""Every admin page renders, stays within its query budget, and shows what it should.

The budget (10 queries) includes the session and user lookups of the logged-in client.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pynenc_django import models as m

MAX_QUERIES = 10
#: How a runner cell starts (``runner_label``); the runner id follows ``q=``.
RUNNER_LINK = '<a class="pynenc-runner" href="/admin/pynenc_django/runnerheartbeat/?app_id='

CHANGELISTS = [
    m.Invocation,
    m.BlockingEdge,
    m.RunnerHeartbeat,
    m.AtomicServiceExecution,
    m.RunnerContextRecord,
    m.BrokerMessage,
    m.DelayedMessage,
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


def test_pages_stop_at_the_last_offered(
    seeded_app: str,
    superuser_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    django_assert_max_num_queries: Any,
) -> None:
    """Past ``PAGED_ROWS`` a list offers no pages: the last one shows, with a note; a
    page past the end of a list within the limit stays Django's error."""
    from pynenc_django.admin import base

    monkeypatch.setattr(base, "PAGED_ROWS", 100)  # 2 pages of 50 of the 150 rows
    url = changelist(m.Invocation)
    html = get(superuser_client, url, {"app_id": seeded_app})
    assert 'id="pynenc-paged-rows"' in html and "Pages stop at 2," in html
    assert "p=2" in html and "p=3" not in html  # the page links stop too
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, url, {"app_id": seeded_app, "p": 3})
    assert "Page 3 is past the last page offered: this is page 2." in html
    assert "-inv-000000099" in html and "-inv-000000049" not in html  # rows 51-100
    assert superuser_client.get(url, {"app_id": seeded_app, "p": 4}).status_code == 302
    monkeypatch.setattr(base, "PAGED_ROWS", 10_000)
    html = get(superuser_client, url, {"app_id": seeded_app})
    assert 'id="pynenc-paged-rows"' not in html
    assert superuser_client.get(url, {"app_id": seeded_app, "p": 4}).status_code == 302  # ?e=1


def test_a_rare_filter_offers_fewer_pages(
    seeded_app: str,
    superuser_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    django_assert_max_num_queries: Any,
) -> None:
    """A filter keeping a share of a long list offers that share of ``PAGED_WALK`` rows:
    its deep pages walk the time index through every row, kept or not."""
    from django.contrib import admin
    from django.db import connection

    from pynenc_django.admin import base

    if connection.vendor != "postgresql":
        pytest.skip("needs the planner's estimates after ANALYZE (MariaDB's are per-key averages)")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pynenc_invocation")
    monkeypatch.setattr(base, "COUNT_CAP", 20)  # 150 invocations are "long"
    monkeypatch.setattr(base, "PAGED_WALK", 0)  # a filter gets one page
    monkeypatch.setattr(admin.site._registry[m.Invocation], "list_per_page", 5)
    url = changelist(m.Invocation)
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, url, {"app_id": seeded_app, "status": "success", "p": 9})
    assert "Page 9 is past the last page offered: this is page 1." in html
    assert "Pages stop at 1: this filter keeps few of the rows" in html
    html = get(superuser_client, url, {"app_id": seeded_app, "p": 9})  # no filter: all pages
    assert 'id="pynenc-paged-rows"' not in html and "p=10" in html
    # A day of the date navigation is a range of the time index, no filter to walk past
    # (the middle row's day holds half the rows at least, wherever midnight falls).
    at = m.Invocation.objects.filter(app_id=seeded_app).order_by("registered_at")[75]
    day = {
        "registered_at__year": at.registered_at.year,
        "registered_at__month": at.registered_at.month,
        "registered_at__day": at.registered_at.day,
    }
    html = get(superuser_client, url, {"app_id": seeded_app, **day})
    assert "this filter keeps few of the rows" not in html and "p=2" in html


def test_oldest_first_follows_the_index(seeded_app: str, superuser_client: Client) -> None:
    """Sorting by registration time the other way breaks ties by ``id`` the same way, so
    the ``(app_id, -registered_at, -id)`` index serves it backwards, deep pages included."""
    from django.contrib import admin
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pynenc_django.admin import base

    column = admin.site._registry[m.Invocation].list_display.index("registered_at") + 1
    url = changelist(m.Invocation)
    first = get(superuser_client, url, {"app_id": seeded_app, "o": column})
    assert "-inv-000000000" in first and "-inv-000000149" not in first
    with CaptureQueriesContext(connection) as queries:
        get(superuser_client, url, {"app_id": seeded_app, "o": column, "p": 3})
    listed = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"]]
    assert listed
    plain = re.sub(r'["`]', "", listed[-1])
    assert re.search(
        r"ORDER BY pynenc_invocation\.registered_at ASC, pynenc_invocation\.id ASC", plain
    )
    assert base.PAGED_ROWS >= 150  # page 3 is a real page here


def test_broker_messages_in_claim_order(fresh_app: str, superuser_client: Client) -> None:
    """Highest priority first, then by first queued time (a rerouted invocation keeps its
    place), then FIFO: as workers take them."""
    m.BrokerMessage.objects.filter(app_id=fresh_app).delete()
    now = timezone.now()
    for invocation_id, priority, queued in (
        ("msg-late", 0.0, now),
        ("msg-rerouted", 0.0, now - timedelta(minutes=5)),  # inserted later, queued earlier
        ("msg-urgent", 5.0, now),
    ):
        m.BrokerMessage.objects.create(
            app_id=fresh_app,
            queue="default",
            priority=priority,
            invocation_id=invocation_id,
            created_at=queued,
        )
    html = get(superuser_client, changelist(m.BrokerMessage), {"app_id": fresh_app})
    order = [html.index(i) for i in ("msg-urgent", "msg-rerouted", "msg-late")]
    assert order == sorted(order)


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
    assert f'<td class="field-runner">{RUNNER_LINK}{seeded_app}&amp;q=seed-runner-1"' in html
    assert f'<td class="field-runner">{RUNNER_LINK}{seeded_app}&amp;q=seed-runner-0"' not in html


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
    # Stuck waits included (the seeded waits are old): edges, their invocations, busy
    # workers and the shown waits' queues, besides the page's own few.
    with django_assert_max_num_queries(MAX_QUERIES):
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
    assert 'id="pynenc-estimates-note"' not in html  # 150 invocations: every count exact
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


# ------------------------------------------------------------------ names, sentences, ids


def name_runner(app_id: str, runner_id: str, name: str) -> None:
    """What ``pynenc_runner --name`` writes: the name on the runner's and its workers'
    heartbeats and runner contexts."""
    for model in (m.RunnerHeartbeat, m.RunnerContextRecord):
        model.objects.filter(app_id=app_id, runner_id__startswith=runner_id).update(name=name)


def cell(html: str, column: str) -> list[str]:
    """The contents of every ``<td>`` of a changelist column."""
    return re.findall(rf'<t[dh] class="field-{column}">(.*?)</t[dh]>', html, re.S)


def test_runner_names_with_host_and_pid_everywhere(
    fresh_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    name_runner(fresh_app, "seed-runner-0", "runner-<1>")  # escaped like any stored text
    named = '<a class="pynenc-runner" href="/admin/pynenc_django/runnerheartbeat/?app_id='
    shown = "runner-&lt;1&gt;</a> <small>(host-0, pid 1000)</small>"

    # The runner list and page.
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, changelist(m.RunnerHeartbeat), {"app_id": fresh_app})
    assert "runner-&lt;1&gt;" in cell(html, "name") and "runner-<1>" not in html
    runner = m.RunnerHeartbeat.objects.get(app_id=fresh_app, runner_id="seed-runner-0")
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, change(runner))
    assert "runner-&lt;1&gt; (seed-runner-0)" in html  # the page's title
    html = get(
        superuser_client, changelist(m.RunnerHeartbeat), {"app_id": fresh_app, "q": "runner-<1>"}
    )
    assert "seed-runner-0-worker-1" in html and "seed-runner-1" not in html  # search by name

    # An invocation's owner (a worker carries its runner's name), in the list and page.
    inv, other = m.Invocation.objects.filter(app_id=fresh_app, status="success")[:2]
    m.Invocation.objects.filter(pk=inv.pk).update(
        status="running", status_runner_id="seed-runner-0-worker-1"
    )
    m.Invocation.objects.filter(pk=other.pk).update(
        status="running", status_runner_id="seed-runner-1-worker-0"
    )
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(
            superuser_client, changelist(m.Invocation), {"app_id": fresh_app, "status": "running"}
        )
    owners = cell(html, "owner")
    assert "runner-&lt;1&gt;</a> <small>(host-0, pid 2001)</small>" in "".join(owners)
    unnamed = "<code>seed-runner-1-worker-0</code></a> <small>(host-1, pid 2010)</small>"
    assert unnamed in "".join(owners)
    html = get(superuser_client, change(inv))
    assert "<strong>runner-&lt;1&gt;</strong> <code>seed-runner-0-worker-1</code>" in html

    # Atomic-service executions: the row's runner and the holder in BLOCKED reasons.
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(
            superuser_client,
            changelist(m.AtomicServiceExecution),
            {"app_id": fresh_app, "runner": "seed-runner-0"},
        )
    assert all(shown in c for c in cell(html, "runner")) and cell(html, "runner")
    html = get(
        superuser_client,
        changelist(m.AtomicServiceExecution),
        {"app_id": fresh_app, "runner": "seed-runner-1", "status": "blocked"},
    )
    assert all(shown in c for c in cell(html, "reason_text")) and cell(html, "reason_text")

    # The runner contexts list, and the overview's live runners.
    html = get(superuser_client, changelist(m.RunnerContextRecord), {"app_id": fresh_app})
    assert "runner-&lt;1&gt;" in cell(html, "name")
    with django_assert_max_num_queries(MAX_QUERIES + 5):
        html = get(superuser_client, reverse("admin:pynenc_django_overview"), {"app_id": fresh_app})
    live = html[html.index('id="pynenc-live-runners"') :]
    live = live[: live.index("</table>")]
    assert named in live and shown in live
    assert "seed-runner-1</code></a> <small>(host-1, pid 1001)</small>" in live  # unnamed
    assert "seed-runner-3" not in live  # dead
    assert "worker" not in live  # runners, not their workers


def test_blocked_reason_is_a_sentence_with_links(
    fresh_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    from django.utils import dateformat

    name_runner(fresh_app, "seed-runner-0", "runner-1")
    blocked = (
        m.AtomicServiceExecution.objects.filter(
            app_id=fresh_app, status="blocked", reason__contains="runner:seed-runner-0"
        )
        .order_by("-start_time")
        .first()
    )
    holder_run = blocked.reason.split()[0].removeprefix("prior_running:")
    holder = m.AtomicServiceExecution.objects.get(app_id=fresh_app, run_id=holder_run)
    since = dateformat.format(timezone.localtime(holder.start_time), "H:i:s")
    url = changelist(m.AtomicServiceExecution)
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, url, {"app_id": fresh_app, "q": blocked.run_id})
    (reason,) = cell(html, "reason_text")
    assert reason == (
        f'<span class="pynenc-reason" title="{blocked.reason}">Blocked: run '
        f'<a href="{url}?app_id={fresh_app}&amp;q={holder_run}" title="run {holder_run}">'
        f"<code>{holder_run}</code></a> of the atomic services was still running on runner "
        f'{RUNNER_LINK}{fresh_app}&amp;q=seed-runner-0" title="runner seed-runner-0">'
        f"runner-1</a> <small>(host-0, pid 1000)</small> since {since}.</span>"
    )
    # Both links lead where they say.
    assert f"{holder_run}</a></th>" in get(
        superuser_client, url, {"app_id": fresh_app, "q": holder_run}
    )
    html = get(
        superuser_client, changelist(m.RunnerHeartbeat), {"app_id": fresh_app, "q": "seed-runner-0"}
    )
    assert cell(html, "runner_id") == [
        '<a href="'
        + change(m.RunnerHeartbeat.objects.get(app_id=fresh_app, runner_id="seed-runner-0"))
        + f'?_changelist_filters=app_id%3D{fresh_app}%26q%3Dseed-runner-0">seed-runner-0</a>'
    ]

    # The page shows the stored text on a line of its own too.
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, change(blocked))
    assert "Blocked: run" in html
    assert f"stored: <code>{blocked.reason}</code>" in html

    # The runner's page tells its executions the same way, within its budget.
    runner = m.RunnerHeartbeat.objects.get(app_id=fresh_app, runner_id="seed-runner-1")
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, change(runner))
    assert "of the atomic services was still running on runner" in html

    # A holder whose row is gone: no time, still the links; ABANDONED reasons; the
    # unknown forms as stored, escaped.
    m.AtomicServiceExecution.objects.filter(pk=blocked.pk).update(
        reason="prior_running:gone-run runner:seed-runner-0"
    )
    html = get(superuser_client, url, {"app_id": fresh_app, "q": blocked.run_id})
    (reason,) = cell(html, "reason_text")
    assert "q=gone-run" in reason and "runner-1</a>" in reason and " since " not in reason
    abandoned = m.AtomicServiceExecution.objects.filter(
        app_id=fresh_app, status="abandoned", runner_id="seed-runner-0"
    ).first()
    for stored, told in [
        (
            "reaped: runner seed-runner-0 last heartbeat 2026-01-02T03:04:05+00:00 is older "
            "than 0:10:00",
            "Abandoned: runner {runner} stopped sending heartbeats (last at 03:04:05), and a "
            "run is given up after 0:10:00 without one; the next claim ended it.",
        ),
        (
            "superseded: runner seed-runner-0 claimed again, run x never finalized",
            "Abandoned: runner {runner} claimed the slot again before this run was finalized",
        ),
        ("exception:OperationalError", "Abandoned: the run raised OperationalError on runner"),
        ("prior_running:a <b>b</b>", "prior_running:a &lt;b&gt;b&lt;/b&gt;"),
        ("reaped: runner someone-else last heartbeat is older than 0:10:00", "reaped: runner"),
    ]:
        m.AtomicServiceExecution.objects.filter(pk=abandoned.pk).update(reason=stored)
        html = get(superuser_client, url, {"app_id": fresh_app, "q": abandoned.run_id})
        (reason,) = cell(html, "reason_text")
        runner_html = (
            f'{RUNNER_LINK}{fresh_app}&amp;q=seed-runner-0" title="runner seed-runner-0">'
            "runner-1</a> <small>(host-0, pid 1000)</small>"
        )
        assert told.format(runner=runner_html) in reason, reason
        assert "<b>" not in reason


def test_search_by_id_prefix(
    fresh_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    """The 8 characters a log line shows, or more, find the row; so does the full id."""
    ids = ["0123abc9-" + str(uuid.uuid4())[9:], "0123abcf-" + str(uuid.uuid4())[9:]]
    rows = list(m.Invocation.objects.filter(app_id=fresh_app, status="success").order_by("pk")[:2])
    owner = str(uuid.uuid4())
    for row, new_id in zip(rows, ids, strict=True):
        m.Invocation.objects.filter(pk=row.pk).update(invocation_id=new_id)
    m.Invocation.objects.filter(pk=rows[1].pk).update(status="running", status_runner_id=owner)
    url = changelist(m.Invocation)

    def found(q: str) -> set[str]:
        with django_assert_max_num_queries(MAX_QUERIES):
            html = get(superuser_client, url, {"app_id": fresh_app, "q": q})
        return set(re.findall(r'class="field-invocation_id"><a [^>]*>([^<]+)</a>', html))

    first, second = ids
    assert found(first[:8]) == {first}  # ends in 9: the range's end is "...abca"
    assert found(second[:8]) == {second}  # ends in f: "...abcg"
    assert found(first[:13]) == {first}  # with the dash
    assert found(first[:8].upper()) == {first}
    assert found(first) == {first}
    assert found(second[:20]) == {second}
    assert found("0123abc") == set()  # 7 characters: exact ids only
    assert found(first[:8] + "x") == set()
    assert found(owner[:8]) == {second}  # the owner's id, as the worker's log shows it

    # The other lists that search by id.
    run = m.AtomicServiceExecution.objects.filter(app_id=fresh_app, status="blocked").first()
    run_id = str(uuid.uuid4())
    m.AtomicServiceExecution.objects.filter(pk=run.pk).update(run_id=run_id)
    html = get(
        superuser_client,
        changelist(m.AtomicServiceExecution),
        {"app_id": fresh_app, "q": run_id[:8]},
    )
    assert f">{run_id}</a>" in html and len(cell(html, "run_id")) == 1
    edge = m.BlockingEdge.objects.filter(app_id=fresh_app).first()
    m.BlockingEdge.objects.filter(pk=edge.pk).update(waiter_id=first)
    html = get(superuser_client, changelist(m.BlockingEdge), {"app_id": fresh_app, "q": first[:8]})
    assert len(cell(html, "waiter")) == 1 and first in cell(html, "waiter")[0]
    worker = m.RunnerHeartbeat.objects.get(app_id=fresh_app, runner_id="seed-runner-1-worker-0")
    m.RunnerHeartbeat.objects.filter(pk=worker.pk).update(runner_id=owner)
    html = get(
        superuser_client, changelist(m.RunnerHeartbeat), {"app_id": fresh_app, "q": owner[:8]}
    )
    assert len(cell(html, "runner_id")) == 1 and owner in cell(html, "runner_id")[0]


def test_times_to_the_second(seeded_app: str, superuser_client: Client) -> None:
    from django.utils import dateformat

    def shown(value: Any) -> str:
        return dateformat.format(timezone.localtime(value), "Y-m-d H:i:s")

    inv = m.Invocation.objects.filter(app_id=seeded_app).order_by("-registered_at", "-id").first()
    html = get(superuser_client, changelist(m.Invocation), {"app_id": seeded_app})
    assert f">{shown(inv.registered_at)}</time>" in cell(html, "registered_at")[0]
    assert "registered_at" in html and "o=" in html  # still sortable by it
    html = get(superuser_client, change(inv))
    assert f">{shown(inv.registered_at)}</time>" in html
    assert f">{shown(inv.status_timestamp)}</time>" in html
    edge = m.BlockingEdge.objects.filter(app_id=seeded_app).order_by("-id").first()
    html = get(superuser_client, changelist(m.BlockingEdge), {"app_id": seeded_app})
    assert f">{shown(edge.created_at)}</time>" in cell(html, "created_at")[0]
    waiter = m.Invocation.objects.get(app_id=seeded_app, invocation_id=edge.waiter_id)
    html = get(superuser_client, change(waiter))
    assert f"since {shown(edge.created_at)}</small>" in html
    runner = m.RunnerHeartbeat.objects.get(app_id=seeded_app, runner_id="seed-runner-0")
    html = get(superuser_client, changelist(m.RunnerHeartbeat), {"app_id": seeded_app})
    assert any(f">{shown(runner.last_heartbeat)}</time>" in c for c in cell(html, "last_heartbeat"))
    completed = (
        m.AtomicServiceExecution.objects.filter(app_id=seeded_app, status="completed")
        .order_by("-end_time")
        .first()
    )
    html = get(superuser_client, changelist(m.AtomicServiceExecution), {"app_id": seeded_app})
    assert f"<small>{shown(completed.end_time)}</small>" in html  # the summary's last run
    assert re.search(r"<time datetime=\S+>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>", html)


def test_blocking_edges_show_task_names(
    seeded_app: str, superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    edges = list(m.BlockingEdge.objects.filter(app_id=seeded_app).order_by("-id")[:50])
    tasks = dict(
        m.Invocation.objects.filter(
            app_id=seeded_app,
            invocation_id__in={e.waiter_id for e in edges} | {e.waited_id for e in edges},
        ).values_list("invocation_id", "task_id_key")
    )
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, changelist(m.BlockingEdge), {"app_id": seeded_app})
    waiters, waited = cell(html, "waiter"), cell(html, "waited")
    assert len(waiters) == len(edges) == len(waited)
    for edge, waiter_html, waited_html in zip(edges, waiters, waited, strict=True):
        assert f"<code>{edge.waiter_id}</code></a> <small>{tasks[edge.waiter_id]}</small>" in (
            waiter_html
        )
        assert f"<code>{edge.waited_id}</code></a> <small>{tasks[edge.waited_id]}</small>" in (
            waited_html
        )
    # The edge's page opens from its time; the invocations link to themselves.
    assert f'href="{change(edges[0])}' in cell(html, "created_at")[0]
    assert change(edges[0]) not in waiters[0]


@pytest.mark.parametrize("admin_first", [True, False], ids=["admin-first", "pynenc-first"])
def test_overview_link_on_the_index_whatever_the_app_order(
    admin_first: bool, superuser_client: Client
) -> None:
    from django.conf import settings
    from django.test import override_settings

    apps = [a for a in settings.INSTALLED_APPS if a != "pynenc_django"]
    at = apps.index("django.contrib.admin") + (1 if admin_first else 0)
    order = [*apps[:at], "pynenc_django", *apps[at:]]
    assert (order.index("django.contrib.admin") < order.index("pynenc_django")) == admin_first
    with override_settings(INSTALLED_APPS=order):
        html = get(superuser_client, reverse("admin:index"))
    assert html.count('id="pynenc-overview-link"') == 1
    assert reverse("admin:pynenc_django_overview") in html
    assert "Site administration" in html  # Django's own index around it


def test_a_delayed_invocation_shows_its_due_time(fresh_app: str, superuser_client: Client) -> None:
    """The invocation list and page say when a delayed invocation may run; the delayed
    messages' list links it."""
    now = timezone.now()
    invocation = m.Invocation.objects.create(
        app_id=fresh_app,
        invocation_id=str(uuid.uuid4()),
        task_id_key="shop.tasks.remind",
        call_id_key="shop.tasks.remind#c",
        status="registered",
        status_timestamp=now,
        registered_at=now,
    )
    due = now + timedelta(hours=3)
    m.DelayedMessage.objects.create(
        app_id=fresh_app,
        queue="default",
        priority=0.0,
        invocation_id=invocation.invocation_id,
        due_at=due,
        created_at=now,
    )
    shown = f'<time datetime="{due.isoformat()}">'
    listed = get(superuser_client, changelist(m.Invocation), {"app_id": fresh_app})
    assert "due at" in listed.lower() and shown in listed
    assert shown in get(superuser_client, change(invocation))
    delayed = get(superuser_client, changelist(m.DelayedMessage), {"app_id": fresh_app})
    assert invocation.invocation_id[:8] in delayed


def test_overview_estimates_beyond_the_cap(
    seeded_app: str,
    superuser_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    django_assert_max_num_queries: Any,
) -> None:
    """Counts by status and queue depths are exact up to the cap; beyond it, one EXPLAIN
    gives the planner's estimates, shown as "about" (SQLite has none: "N+")."""
    from django.db import connection

    from pynenc_django.admin import overview

    monkeypatch.setattr(overview, "STATUS_CAP", 2)
    url = reverse("admin:pynenc_django_overview")
    with django_assert_max_num_queries(MAX_QUERIES):
        html = get(superuser_client, url, {"app_id": seeded_app})
    statuses = html[html.index('id="pynenc-status-counts"') :]
    statuses = statuses[: statuses.index("</table>")]
    queues = html[html.index('id="pynenc-queues"') :]
    queues = queues[: queues.index("</table>")]
    assert 'id="pynenc-estimates-note"' in html
    assert ">0</a>" in statuses  # PENDING_RECOVERY: none, exactly
    if connection.vendor == "sqlite":
        assert "2+" in statuses and "2+" in queues and "about" not in statuses
    else:
        assert "about" in statuses and "about" in queues and "in all" in html
        assert "estimated by the database planner" in statuses


def test_overview_reads_only_capped_ranges(
    seeded_app: str, superuser_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No aggregate over a whole status or queue: whatever is counted is capped, the
    oldest times are single index probes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = reverse("admin:pynenc_django_overview")
    with CaptureQueriesContext(connection) as queries:
        get(superuser_client, url, {"app_id": seeded_app})
    sql = [re.sub(r'["`]', "", q["sql"]) for q in queries.captured_queries]
    assert not any("GROUP BY" in q and "pynenc_broker_message" in q for q in sql)
    assert not any(re.search(r"MIN\(pynenc_invocation\.status_timestamp\)", q) for q in sql)


def test_rounded_estimates() -> None:
    from pynenc_django.admin.base import rounded_estimate

    assert rounded_estimate(987) == 987
    assert rounded_estimate(8_012_345) == 8_010_000
    assert rounded_estimate(147_304) == 147_000
