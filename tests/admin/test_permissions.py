"""Staff only, model permissions respected, actions behind their own permissions, CSRF."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from pynenc_django import models as m

INVOCATIONS = reverse("admin:pynenc_django_invocation_changelist")
OVERVIEW = reverse("admin:pynenc_django_overview")


def _detail(app_id: str) -> str:
    inv = m.Invocation.objects.filter(app_id=app_id).first()
    return reverse("admin:pynenc_django_invocation_change", args=[inv.pk])


def test_anonymous_and_non_staff_are_sent_to_login(
    seeded_app: str, client_for: Callable[..., Client]
) -> None:
    for client in (Client(), client_for("pynenc_django.view_invocation", staff=False)):
        for url in (INVOCATIONS, _detail(seeded_app), OVERVIEW):
            response = client.get(url)
            assert response.status_code == 302
            assert reverse("admin:login") in response["Location"]


def test_staff_without_view_permission_is_refused(
    seeded_app: str, client_for: Callable[..., Client]
) -> None:
    client = client_for("pynenc_django.view_runnerheartbeat")
    assert client.get(INVOCATIONS).status_code == 403
    assert client.get(_detail(seeded_app)).status_code == 403
    assert client.get(OVERVIEW).status_code == 403
    runners = reverse("admin:pynenc_django_runnerheartbeat_changelist")
    assert client.get(runners, {"app_id": seeded_app}).status_code == 200


def test_view_permission_shows_no_actions(
    seeded_app: str, client_for: Callable[..., Client]
) -> None:
    client = client_for("pynenc_django.view_invocation")
    html = client.get(INVOCATIONS, {"app_id": seeded_app}).content.decode()
    assert 'name="action"' not in html
    assert client.get(OVERVIEW, {"app_id": seeded_app}).status_code == 200


@pytest.mark.parametrize(
    ("perms", "offered", "absent"),
    [
        (["view_invocation", "add_invocation"], ["rerun_invocations"], ["cancel_invocations"]),
        (
            ["view_invocation", "change_invocation"],
            ["cancel_invocations", "reroute_invocations"],
            ["rerun_invocations"],
        ),
    ],
)
def test_actions_need_their_permission(
    seeded_app: str,
    client_for: Callable[..., Client],
    perms: list[str],
    offered: list[str],
    absent: list[str],
) -> None:
    client = client_for(*[f"pynenc_django.{p}" for p in perms])
    html = client.get(INVOCATIONS, {"app_id": seeded_app}).content.decode()
    for action in offered:
        assert f'value="{action}"' in html
    for action in absent:
        assert f'value="{action}"' not in html
    assert 'value="delete_selected"' not in html


def test_action_without_permission_changes_nothing(
    fresh_app: str, client_for: Callable[..., Client]
) -> None:
    inv = m.Invocation.objects.filter(app_id=fresh_app, status="registered").first()
    client = client_for("pynenc_django.view_invocation", "pynenc_django.add_invocation")
    response = client.post(
        f"{INVOCATIONS}?app_id={fresh_app}",
        {"action": "cancel_invocations", "_selected_action": [inv.pk], "post": "yes"},
    )
    assert response.status_code == 302
    inv.refresh_from_db()
    assert inv.status == "registered"


def test_forms_for_add_change_and_delete_are_refused(
    seeded_app: str, superuser_client: Client
) -> None:
    inv = m.Invocation.objects.filter(app_id=seeded_app).first()
    add = reverse("admin:pynenc_django_invocation_add")
    delete = reverse("admin:pynenc_django_invocation_delete", args=[inv.pk])
    assert superuser_client.get(add).status_code == 403
    assert superuser_client.get(delete).status_code == 403
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    response = superuser_client.post(_detail(seeded_app), {"status": "success"})
    assert response.status_code == 403
    inv.refresh_from_db()
    assert m.Invocation.objects.filter(pk=inv.pk).exists()


def test_actions_need_a_csrf_token(fresh_app: str, make_user: Callable[..., Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user(superuser=True))
    inv = m.Invocation.objects.filter(app_id=fresh_app, status="registered").first()
    response = client.post(
        f"{INVOCATIONS}?app_id={fresh_app}",
        {"action": "cancel_invocations", "_selected_action": [inv.pk], "post": "yes"},
    )
    assert response.status_code == 403
    inv.refresh_from_db()
    assert inv.status == "registered"
    # The confirmation page carries a token, so the real flow works.
    page = client.get(f"{INVOCATIONS}?app_id={fresh_app}")
    token = page.cookies["csrftoken"].value
    confirm = client.post(
        f"{INVOCATIONS}?app_id={fresh_app}",
        {
            "action": "cancel_invocations",
            "_selected_action": [inv.pk],
            "csrfmiddlewaretoken": token,
        },
    )
    assert confirm.status_code == 200
    assert "csrfmiddlewaretoken" in confirm.content.decode()
