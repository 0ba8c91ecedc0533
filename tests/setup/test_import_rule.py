"""pynenc imports every plugin module at every ``Pynenc()`` and tolerates only
ImportError, so our modules must load in a process where Django is not configured."""

from __future__ import annotations

import os
import subprocess
import sys

BACKEND_MODULES = [
    "pynenc_django",
    "pynenc_django.builder",
    "pynenc_django.orchestrator",
    "pynenc_django.broker",
    "pynenc_django.state_backend",
    "pynenc_django.trigger",
    "pynenc_django.client_data_store",
]

SCRIPT = f"""
import importlib, sys
for name in {BACKEND_MODULES!r}:
    importlib.import_module(name)
assert "pynenc_django.models" not in sys.modules, "models imported at import time"
from django.conf import settings
assert not settings.configured
from pynenc import Pynenc, PynencBuilder
app = Pynenc()  # loads every pynenc.plugins entry point
assert type(app.orchestrator).__name__ == "MemOrchestrator"
builder = PynencBuilder().django(db_alias="other")
assert builder._config["orchestrator_cls"] == "DjangoOrchestrator"
assert builder._config["django_db_alias"] == "other"
try:
    PynencBuilder().app_id("no-django").django().build().orchestrator
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def run_without_django() -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYNENC__"))}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )


def test_backend_modules_import_and_pynenc_builds_without_django_settings() -> None:
    proc = run_without_django()
    assert proc.returncode == 0, proc.stderr


def test_using_a_backend_without_settings_says_how_to_fix_it() -> None:
    proc = run_without_django()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("DjangoNotConfiguredError")
    assert "DJANGO_SETTINGS_MODULE" in proc.stdout
    assert "INSTALLED_APPS" in proc.stdout


FROZEN = {"pynenc_django.models.indexes"}


def test_migrations_are_frozen_history() -> None:
    """Runtime code never imports a migration, and a migration imports neither runtime
    code nor another migration: changing either must never change what migrating did.
    The one exception is the index classes migrations name (as Django's own migrations
    name ``django.contrib.postgres.indexes``), kept frozen in their module."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "pynenc_django"
    found = []
    for path in package.rglob("*.py"):
        in_migrations = path.parent.name == "migrations"
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("pynenc_django.migrations.")
            ):
                names = [node.value]  # importlib.import_module("...")
            for name in names:
                if in_migrations and name.startswith("pynenc_django") and name not in FROZEN:
                    found.append(f"{path.name} imports {name}")
                if not in_migrations and name.startswith("pynenc_django.migrations"):
                    found.append(f"{path.relative_to(package)} imports {name}")
    assert not found, found
