from django.core import checks
from django.test import override_settings


def _ids() -> set[str]:
    return {message.id for message in checks.run_checks() if message.id}


def test_use_tz_false_is_a_system_check_error() -> None:
    with override_settings(USE_TZ=False):
        assert "pynenc_django.E001" in _ids()


def test_test_settings_pass_every_check() -> None:
    assert not {i for i in _ids() if i.startswith("pynenc_django.")}
