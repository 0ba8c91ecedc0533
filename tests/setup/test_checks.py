"""``manage.py check`` reports every misconfiguration with an id and a hint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from tests.settings import PYNENC

PROJECT = Path(__file__).resolve().parents[1] / "project"


def _messages() -> dict[str, Any]:
    return {m.id: m for m in checks.run_checks() if m.id and m.id.startswith("pynenc_django.")}


def _all_messages(check_id: str) -> list[str]:
    """Every message of ``check_id`` (one per bad value)."""
    return [m.msg for m in checks.run_checks() if m.id == check_id]


def _manage(*args: str, settings: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``manage.py <args>`` of the test project in a subprocess: exit code and output."""
    done = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), *args],
        cwd=PROJECT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": settings, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return done.returncode, done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_test_settings_pass_every_check() -> None:
    assert _messages() == {}


def test_use_tz_false_is_an_error() -> None:
    with override_settings(USE_TZ=False):
        assert "pynenc_django.E001" in _messages()


def test_pynenc_setting_must_be_a_dict() -> None:
    with override_settings(PYNENC=["app_id", "shop"]):
        message = _messages()["pynenc_django.E002"]
    assert "must be a dict" in message.msg


def test_misspelled_key_gets_a_did_you_mean() -> None:
    with override_settings(PYNENC={**PYNENC, "num_procesess": 4}):
        message = _messages()["pynenc_django.E003"]
    assert "'num_procesess'" in message.msg
    assert "Did you mean 'num_processes'?" in message.hint


@pytest.mark.parametrize("key", ["app_id", "db_alias", "autodiscover", "django_listen_notify"])
def test_known_keys_are_accepted(key: str) -> None:
    value = {"app_id": "x", "db_alias": "default", "autodiscover": False}.get(key, True)
    with override_settings(PYNENC={**PYNENC, key: value}):
        assert "pynenc_django.E003" not in _messages()


def test_unknown_database_alias() -> None:
    with override_settings(PYNENC={**PYNENC, "db_alias": "pynenc"}):
        message = _messages()["pynenc_django.E004"]
    assert "'pynenc'" in message.msg and "'default'" in message.hint


def test_unknown_runner() -> None:
    with override_settings(PYNENC={**PYNENC, "runner_cls": "DjangoPersistentProcesRunner"}):
        message = _messages()["pynenc_django.E006"]
    assert "Did you mean 'DjangoPersistentProcessRunner'?" in message.hint


def test_placeholder_runner_is_not_runnable() -> None:
    with override_settings(PYNENC={**PYNENC, "runner_cls": "DummyRunner"}):
        assert "pynenc_django.E006" in _messages()


def test_value_of_the_wrong_type() -> None:
    with override_settings(PYNENC={**PYNENC, "num_processes": "four"}):
        message = _messages()["pynenc_django.E007"]
    assert "Expected <class 'int'>" in message.msg


def test_pynenc_s_persistent_runner_gets_a_warning() -> None:
    with override_settings(PYNENC={**PYNENC, "runner_cls": "PersistentProcessRunner"}):
        message = _messages()["pynenc_django.W001"]
    assert "DjangoPersistentProcessRunner" in message.hint


# ------------------------------------------------------------ every value, by key (E007-E009)


def test_every_value_of_the_wrong_type_is_named() -> None:
    bad = {"runner_considered_dead_after_minutes": "ten", "max_pending_seconds": "soon"}
    with override_settings(PYNENC={**PYNENC, **bad}):
        messages = _all_messages("pynenc_django.E007")
    assert len(messages) == 2, messages
    for key, value in bad.items():
        assert any(f"PYNENC[{key!r}] is {value!r}" in m for m in messages), messages


@pytest.mark.parametrize(
    "key",
    ["db_alias", "autodiscover", "tasks_module"],
)
def test_integration_keys_of_the_wrong_type_are_named(key: str) -> None:
    value = {"db_alias": 3, "autodiscover": "yes", "tasks_module": ""}[key]
    with override_settings(PYNENC={**PYNENC, key: value}):
        messages = _all_messages("pynenc_django.E007")
    assert any(f"PYNENC[{key!r}] is {value!r}" in m for m in messages), messages


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("num_processes", 0, "at least 1"),
        ("max_processes", 0, "at least 1"),
        ("django_shutdown_grace_sec", -1, "at least 0"),
        ("django_idle_wait_max_sec", 0, "greater than 0"),
        ("django_heartbeat_interval_sec", -5, "greater than 0"),
        ("django_transient_retries", -1, "at least 0"),
        ("runner_considered_dead_after_minutes", -10, "greater than 0"),
        ("max_pending_seconds", 0, "greater than 0"),
        ("queue_timeout_sec", -0.5, "at least 0"),
    ],
)
def test_values_out_of_range_are_refused(key: str, value: float, rule: str) -> None:
    with override_settings(PYNENC={**PYNENC, key: value}):
        messages = _all_messages("pynenc_django.E008")
    assert messages == [f"settings.PYNENC[{key!r}] is {value!r}: must be {rule}."], messages


def test_every_value_out_of_range_is_named() -> None:
    bad = {"num_processes": 0, "django_shutdown_grace_sec": -1, "django_reroute_timeout_sec": -3}
    with override_settings(PYNENC={**PYNENC, **bad}):
        messages = _all_messages("pynenc_django.E008")
    assert len(messages) == len(bad), messages
    for key in bad:
        assert any(f"PYNENC[{key!r}]" in m for m in messages), messages


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_processes", 1), ("django_shutdown_grace_sec", 0), ("django_conditions_cache_sec", 0)],
)
def test_values_at_the_edge_of_their_range_are_accepted(key: str, value: float) -> None:
    with override_settings(PYNENC={**PYNENC, key: value}):
        assert _messages() == {}


def test_an_environment_variable_out_of_range_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__NUM_PROCESSES", "0")
    message = _messages()["pynenc_django.E008"]
    assert message.msg == "PYNENC__NUM_PROCESSES is '0': must be at least 1."


def test_the_runner_refuses_what_the_check_refuses() -> None:
    """One rule, two readers: the config the runner is built from raises on the same value."""
    from pynenc_django.conf import ConfigDjangoPersistentProcessRunner, PynencSettingsError

    with pytest.raises(PynencSettingsError, match="num_processes is 0: must be at least 1"):
        ConfigDjangoPersistentProcessRunner(config_values={"num_processes": 0})
    with pytest.raises(PynencSettingsError, match="django_shutdown_grace_sec is -1.0"):
        ConfigDjangoPersistentProcessRunner(config_values={"django_shutdown_grace_sec": -1})
    # pynenc's default 0 ("the CPU count") is not a value anyone gave.
    assert ConfigDjangoPersistentProcessRunner(config_values={}).num_processes == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a,b", "not a string (write ['a', 'b'])"),
        ("emails", "not a string (write ['emails'])"),
        ([], "must name at least one queue"),
        (["default", ""], "invalid queue name(s) ''"),
        (["emails", "bad queue"], "invalid queue name(s) 'bad queue'"),
        (["emails", "emails"], "repeats 'emails'"),
        ({"emails": 1}, "list or tuple of queue names, not dict"),
    ],
)
def test_queues_must_be_a_list_of_names(value: Any, reason: str) -> None:
    with override_settings(PYNENC={**PYNENC, "queues": value}):
        messages = _all_messages("pynenc_django.E009")
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"settings.PYNENC['queues'] is {value!r}: "), messages
    assert reason in messages[0], messages


@pytest.mark.parametrize("value", [["emails"], ("default", "emails")])
def test_a_list_of_queues_is_accepted(value: Any) -> None:
    with override_settings(PYNENC={**PYNENC, "queues": value}):
        assert _messages() == {}


def test_declared_queues_are_all_consumed_by_default() -> None:
    """pynenc reads a top-level ``queues`` as the runners' selection too: a runner would
    consume only ``emails``, never ``default``, and every default task would wait."""
    from pynenc.conf.config_runner import ConfigRunner

    from pynenc_django.project import config_values

    with override_settings(PYNENC={**PYNENC, "queues": ["emails"]}):
        assert ConfigRunner(config_values=config_values()).queues == ()


# ------------------------------------------------------------ no crash: commands refuse


BAD_VALUES_SETTINGS = "tests.project.settings_bad_values"
BAD_VALUES = {
    "runner_considered_dead_after_minutes": "pynenc_django.E007",
    "max_pending_seconds": "pynenc_django.E007",
    "num_processes": "pynenc_django.E008",
    "django_shutdown_grace_sec": "pynenc_django.E008",
    "queues": "pynenc_django.E009",
}


@pytest.mark.parametrize(
    "command",
    [
        ["check"],
        ["migrate", "--plan"],
        ["pynenc_runner", "--processes", "1"],
        ["runserver", "--noreload", "127.0.0.1:{port}"],
    ],
    ids=["check", "migrate", "pynenc_runner", "runserver"],
)
def test_bad_values_stop_commands_with_the_named_errors(command: list[str]) -> None:
    """Before, ``AppConfig.ready()`` autodiscovered a tasks module, whose ``@app.task``
    made pynenc parse the settings: every command died with a TypeError naming no key."""
    args = [arg.format(port=_free_port()) for arg in command]
    code, output = _manage(*args, settings=BAD_VALUES_SETTINGS)
    assert code != 0, output
    assert "Traceback" not in output, output
    assert "SystemCheckError" in output, output
    for key, check_id in BAD_VALUES.items():
        assert any(
            check_id in line and f"PYNENC[{key!r}]" in line for line in output.splitlines()
        ), (
            key,
            output,
        )


def test_the_app_reached_anyway_names_the_bad_values() -> None:
    """A user module doing ``from pynenc_django import app`` outside autodiscovery gets an
    error that names each bad value, not cistell's ``TypeError: Invalid type``."""
    code, output = _manage(
        "shell", "-c", "from pynenc_django import app", settings=BAD_VALUES_SETTINGS
    )
    assert code != 0, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("pynenc_django.conf.PynencSettingsError: "), output
    for key in BAD_VALUES:
        assert f"PYNENC[{key!r}]" in last, output
    assert "Invalid type. Expected <class 'float'>" in last  # the key is named before it


# ------------------------------------------------------------ tasks on unconsumed queues (W002)


QUEUES_SETTINGS = "tests.project.settings_queues"


def test_a_task_on_a_queue_no_runner_consumes_is_a_warning() -> None:
    code, output = _manage("check", settings=QUEUES_SETTINGS)
    assert code == 0, output  # a warning
    lines = [line for line in output.splitlines() if "(pynenc_django.W002)" in line]
    assert len(lines) == 1, output
    assert "'tests.project.jobs.queues.send_email'" in lines[0], output
    assert "queue 'emails'" in lines[0], output
    assert "Add 'emails' to PYNENC[\"queues\"]" in output, output
    assert "pynenc_runner --queues emails" in output, output


def test_a_queue_in_pynenc_queues_is_consumed() -> None:
    code, output = _manage(
        "check", settings=QUEUES_SETTINGS, env={"PYNENC__QUEUES": "default,emails"}
    )
    assert code == 0, output
    assert "pynenc_django.W002" not in output, output
    assert "System check identified no issues" in output, output
