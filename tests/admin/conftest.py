"""Fixtures for the admin tests.

The suite runs against committed data (see ``tests/conftest.py``), so every fixture
creates rows under its own ``app_id`` or username and deletes them afterwards.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Generator
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

SEED_COUNT = 150


def _app_id(name: str) -> str:
    return f"adm-{name[:30]}-{hashlib.sha1(f'{name}{uuid.uuid4()}'.encode()).hexdigest()[:8]}"


def purge(app_id: str) -> None:
    from bench.seeding.management.commands.pynenc_seed import purge_app
    from pynenc_django.models import AtomicServiceGate

    purge_app(app_id, "default")
    AtomicServiceGate.objects.filter(app_id=app_id).delete()


@pytest.fixture(scope="module")
def seeded_app(request: pytest.FixtureRequest) -> Generator[str, None, None]:
    """A realistic app (``pynenc_seed``) shared by the read-only tests of a module."""
    app_id = _app_id(request.module.__name__.rsplit(".", 1)[-1])
    call_command("pynenc_seed", app_id=app_id, count=SEED_COUNT, verbosity=0)
    yield app_id
    purge(app_id)


@pytest.fixture
def fresh_app(request: pytest.FixtureRequest) -> Generator[str, None, None]:
    """A seeded app of its own, for tests that change rows."""
    app_id = _app_id(request.node.name)
    call_command("pynenc_seed", app_id=app_id, count=60, verbosity=0)
    yield app_id
    purge(app_id)


@pytest.fixture
def make_user() -> Generator[Callable[..., Any], None, None]:
    """``make_user(perms=[...], staff=True, superuser=False)``: a user deleted afterwards."""
    from django.contrib.auth.models import Permission, User

    created: list[Any] = []

    def make(perms: list[str] = (), staff: bool = True, superuser: bool = False) -> Any:  # type: ignore[assignment]
        user = User.objects.create_user(
            username=f"adm-{uuid.uuid4().hex[:12]}",
            password="pw",
            is_staff=staff,
            is_superuser=superuser,
        )
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        created.append(user)
        return user

    yield make
    from django.contrib.admin.models import LogEntry

    LogEntry.objects.filter(user__in=created).delete()
    for user in created:
        user.delete()


@pytest.fixture
def superuser_client(make_user: Callable[..., Any]) -> Client:
    client = Client()
    client.force_login(make_user(superuser=True))
    return client


@pytest.fixture
def client_for(make_user: Callable[..., Any]) -> Callable[..., Client]:
    def make(*perms: str, staff: bool = True) -> Client:
        client = Client()
        client.force_login(make_user(perms=list(perms), staff=staff))
        return client

    return make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name the browser test's screenshots in the run's summary (CI logs included)."""
    from tests.admin.test_browser import SCREENSHOT

    shots = sorted(SCREENSHOT.parent.glob("admin-*.png")) if SCREENSHOT.parent.exists() else []
    started = getattr(terminalreporter, "_sessionstarttime", 0)
    fresh = [p for p in shots if p.stat().st_mtime >= started]
    if fresh:
        terminalreporter.write_line("admin screenshots: " + ", ".join(str(p) for p in fresh))
