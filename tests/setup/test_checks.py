"""``manage.py check`` reports every misconfiguration with an id and a hint."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from tests.settings import PYNENC


def _messages() -> dict[str, Any]:
    return {m.id: m for m in checks.run_checks() if m.id and m.id.startswith("pynenc_django.")}


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
