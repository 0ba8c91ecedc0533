"""Clear errors instead of raw ones: an invocation id that is not stored raises pynenc's
``InvocationNotFoundError`` from every look-up, and a database without pynenc's tables
gives every command and every submit the same message: which alias, and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from pynenc import Pynenc
from pynenc.exceptions import InvocationNotFoundError

from pynenc_django import enqueue_on_commit
from pynenc_django.db import retry_transient
from pynenc_django.exceptions import NotMigratedError

PROJECT = Path(__file__).resolve().parents[1] / "project"
FIX = "Run: manage.py migrate pynenc_django --database default"
NOT_MIGRATED = "pynenc's tables are not up to date on database alias 'default'"
# How each database words a missing table.
MISSING_TABLE = {
    "sqlite": "no such table: ",
    "postgresql": "does not exist",
    "mysql": "doesn't exist",
}


def add(x: int, y: int) -> int:
    return x + y


# ---------------------------------------------------------------------------- unknown ids


def lookups(app: Pynenc) -> dict[str, Callable[[str], Any]]:
    return {
        "orchestrator.get_invocation_status": app.orchestrator.get_invocation_status,
        "orchestrator.get_invocation_status_record": (
            app.orchestrator.get_invocation_status_record
        ),
        "state_backend.get_invocation": app.state_backend.get_invocation,
        "state_backend.get_result": app.state_backend.get_result,
        "state_backend.get_exception": app.state_backend.get_exception,
    }


def test_every_lookup_of_an_unknown_id_raises_invocation_not_found(app_instance: Pynenc) -> None:
    for name, lookup in lookups(app_instance).items():
        with pytest.raises(InvocationNotFoundError) as raised:
            lookup("nope")
        assert raised.value.invocation_id == "nope", name
        message = str(raised.value)
        assert repr(app_instance.app_id) in message, (name, message)
        assert "database alias 'default'" in message, (name, message)
        assert "not committed yet" in message, (name, message)
        # pynenc documents KeyError for its orchestrator's look-ups: callers catch it.
        assert isinstance(raised.value, KeyError), name


def test_a_status_change_of_an_unknown_id_raises_invocation_not_found(
    app_instance: Pynenc,
) -> None:
    """A write by id too (the admin's actions and pynenc's status changes go through it)."""
    from pynenc.invocation.status import InvocationStatus

    ctx = app_instance.runner.runner_context
    with pytest.raises(InvocationNotFoundError) as raised:
        app_instance.orchestrator.record_status_change(  # type: ignore[attr-defined]
            "nope", InvocationStatus.RUNNING, ctx
        )
    assert isinstance(raised.value, KeyError)
    assert "database alias 'default'" in str(raised.value)


def test_status_and_result_of_an_enqueued_invocation_before_commit(app_instance: Pynenc) -> None:
    task = app_instance.task(add)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        invocation = enqueue_on_commit(task, 1, 2)
        with pytest.raises(InvocationNotFoundError, match="not committed yet"):
            invocation.status  # noqa: B018
        with pytest.raises(InvocationNotFoundError, match="not committed yet"):
            invocation.result  # noqa: B018
        raise Rollback


def test_an_uncommitted_invocation_is_not_found_by_other_connections(
    app_instance: Pynenc,
) -> None:
    task = app_instance.task(add)
    seen: list[BaseException | str] = []

    def look(invocation_id: str) -> None:
        try:
            seen.append(app_instance.orchestrator.get_invocation_status(invocation_id))
        except BaseException as exc:
            seen.append(exc)
        finally:
            from django.db import connections

            connections.close_all()  # this thread's own

    with transaction.atomic():
        invocation = task(1, 2)  # registered in this transaction, not committed yet
        thread = threading.Thread(target=look, args=(invocation.invocation_id,))
        thread.start()
        thread.join(60)
    assert len(seen) == 1 and isinstance(seen[0], InvocationNotFoundError), seen
    assert not app_instance.orchestrator.get_invocation_status(invocation.invocation_id).is_final()


def test_a_stored_invocation_without_a_result_says_so(app_instance: Pynenc) -> None:
    invocation = app_instance.task(add)(1, 2)
    with pytest.raises(InvocationNotFoundError, match="stored but has no result"):
        app_instance.state_backend.get_result(invocation.invocation_id)
    with pytest.raises(InvocationNotFoundError, match="stored but has no exception"):
        app_instance.state_backend.get_exception(invocation.invocation_id)
    assert app_instance.state_backend.get_history(invocation.invocation_id)


def test_a_purged_invocation_is_not_found(app_instance: Pynenc) -> None:
    invocation = app_instance.task(add)(1, 2)
    app_instance.purge()
    with pytest.raises(InvocationNotFoundError, match="unknown or purged"):
        invocation.status  # noqa: B018


# ---------------------------------------------------------------------------- missing tables


class Backend:
    """What :func:`retry_transient` needs of a backend, running one given statement."""

    db_alias = "default"
    transient_retries = 3

    @retry_transient
    def execute(self, sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)


@pytest.mark.parametrize("atomic", [False, True], ids=["autocommit", "in-transaction"])
def test_a_missing_table_is_not_migrated_error_naming_alias_and_fix(atomic: bool) -> None:
    backend = Backend()
    with pytest.raises(NotMigratedError) as raised:
        if atomic:
            with transaction.atomic():
                backend.execute("SELECT 1 FROM pynenc_never_migrated")
        else:
            backend.execute("SELECT 1 FROM pynenc_never_migrated")
    message = str(raised.value)
    assert message.startswith(NOT_MIGRATED), message
    assert message.endswith(FIX), message
    assert MISSING_TABLE[connection.vendor] in message, "the database's own words"
    assert "pynenc_never_migrated" in message
    assert raised.value.alias == "default"


def test_other_database_errors_are_not_translated() -> None:
    from django.db import DatabaseError

    with pytest.raises(DatabaseError) as raised:
        Backend().execute("SELEC 1")
    assert not isinstance(raised.value, NotMigratedError)


# ---------------------------------------------------------------------------- before migrate


@pytest.fixture
def unmigrated() -> Iterator[dict[str, str]]:
    """An empty database of this run's vendor, and the environment of the test project's
    processes that use it (the test settings name it after the suffix)."""
    from django.conf import settings

    suffix = f"{os.environ.get('PYNENC_DJANGO_TEST_DB_SUFFIX', '')}_nomig"
    name = f"test_pynenc_django{suffix}"
    vendor = connection.vendor

    def drop() -> None:
        if vendor == "sqlite":
            path = Path(settings.DATABASES["default"]["NAME"]).with_name(f"{name}.sqlite3")
            for end in ("", "-wal", "-shm"):
                Path(f"{path}{end}").unlink(missing_ok=True)
        elif vendor == "postgresql":
            with connection._nodb_cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    [name],
                )
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        else:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")

    drop()
    if vendor == "postgresql":
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    elif vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield {
        "PYNENC_DJANGO_TEST_DB_SUFFIX": suffix,
        "DJANGO_SETTINGS_MODULE": "tests.project.settings",
    }
    drop()


def manage(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), *args],
        cwd=PROJECT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["pynenc_status"],
        ["pynenc_purge", "--older-than", "1d"],
        ["pynenc_runner", "--processes", "1"],
    ],
    ids=lambda command: command[0],
)
def test_commands_before_migrate_say_so(unmigrated: dict[str, str], command: list[str]) -> None:
    code, output = manage(unmigrated, *command)
    assert code != 0, output
    assert NOT_MIGRATED in output, output
    assert FIX in output, output
    assert "Traceback" not in output, output


SUBMIT = """
from django.core.exceptions import ImproperlyConfigured
from pynenc_django.exceptions import NotMigratedError
from tests.project.jobs.tasks import add
try:
    add(1, 2)
except NotMigratedError as exc:
    assert isinstance(exc, ImproperlyConfigured)
    print("raised:", exc)
"""


def test_a_submit_before_migrate_raises_not_migrated_error(unmigrated: dict[str, str]) -> None:
    code, output = manage(unmigrated, "shell", "-c", SUBMIT)
    assert code == 0, output
    assert f"raised: {NOT_MIGRATED}" in output, output
    assert FIX in output, output
    assert MISSING_TABLE[connection.vendor] in output, "the database's own words"
