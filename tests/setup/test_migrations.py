"""Models and migrations never drift apart, whatever the project's DEFAULT_AUTO_FIELD."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings


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
