"""Models and migrations never drift apart, whatever the project's DEFAULT_AUTO_FIELD."""

from __future__ import annotations

import importlib
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings
from pynenc import Pynenc


@pytest.mark.parametrize(
    "auto_field", ["django.db.models.AutoField", "django.db.models.BigAutoField"]
)
def test_makemigrations_check_finds_no_changes(auto_field: str) -> None:
    out = StringIO()
    with override_settings(DEFAULT_AUTO_FIELD=auto_field):
        call_command("makemigrations", "pynenc_django", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_every_index_and_constraint_leads_with_app_id() -> None:
    from django.apps import apps

    for model in apps.get_app_config("pynenc_django").get_models():
        for index in model._meta.indexes:
            assert index.fields[0].lstrip("-") == "app_id", (model.__name__, index.name)
        for constraint in model._meta.constraints:
            assert constraint.fields[0] == "app_id", (model.__name__, constraint.name)


def test_mysql_triggers_migration_reverses_and_reapplies() -> None:
    """0004 installs the history triggers on MariaDB/MySQL and removes them going back
    (a no-op elsewhere, where 0003's triggers stay)."""
    from django.db import connection

    from pynenc_django.vendors import MySQL

    mysql = connection.vendor == "mysql"
    triggers = MySQL().records_history
    call_command("migrate", "pynenc_django", "0003", verbosity=0)
    try:
        if mysql:
            assert not triggers("default")
    finally:
        call_command("migrate", "pynenc_django", verbosity=0)
    if mysql:
        assert triggers("default")


def _invocation_triggers() -> dict[str, bool]:
    """PostgreSQL: each trigger on pynenc_invocation, and whether it fires per row."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname, (tgtype & 1) = 1 FROM pg_trigger "
            "WHERE tgrelid = 'pynenc_invocation'::regclass AND NOT tgisinternal"
        )
        return dict(cursor.fetchall())


def _registered_history(app: Pynenc, count: int) -> int:
    """REGISTERED history rows the triggers wrote for a batch of ``count`` new invocations."""
    from pynenc_django.models import InvocationHistory

    group = app.task(noop).parallelize([(i,) for i in range(count)])
    ids = [inv.invocation_id for inv in group.invocations]
    return (
        InvocationHistory.objects.for_app(app.app_id)
        .filter(invocation_id__in=ids, status="registered")
        .count()
    )


def noop(i: int) -> int:
    return i


def test_registered_history_migration_reverses_and_reapplies(app_instance: Pynenc) -> None:
    """0012 writes a statement's REGISTERED history in one INSERT per statement; going back
    restores 0011's row trigger, function and all."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's triggers")
    m11 = importlib.import_module(
        "pynenc_django.migrations.0011_final_announcements_carry_the_status"
    )

    def function_body() -> str:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT prosrc FROM pg_proc WHERE proname = 'pynenc_invocation_status_changed'"
            )
            return " ".join(cursor.fetchone()[0].split())

    call_command("migrate", "pynenc_django", "0011", verbosity=0)
    try:
        assert _invocation_triggers() == {"pynenc_invocation_status_changed": True}
        assert function_body() in " ".join(m11.WITH_RECORD.split())
        assert _registered_history(app_instance, 30) == 30
    finally:
        call_command("migrate", "pynenc_django", verbosity=0)
    assert _invocation_triggers() == {
        "pynenc_invocation_status_changed": True,
        "pynenc_invocations_registered": False,  # once per statement
    }
    assert "TG_OP = 'INSERT'" not in function_body()
    assert _registered_history(app_instance, 30) == 30
