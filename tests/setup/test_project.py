"""``settings.PYNENC`` becomes the project's pynenc app, the way the docs say."""

from __future__ import annotations

import sys

import pytest
from django.test import override_settings
from pynenc import Pynenc

from pynenc_django import project
from tests.settings import PYNENC


def test_defaults_select_the_django_backends_and_runner() -> None:
    app = project.build_app()
    assert app.app_id == PYNENC["app_id"]
    assert type(app.orchestrator).__name__ == "DjangoOrchestrator"
    assert type(app.broker).__name__ == "DjangoBroker"
    assert type(app.runner).__name__ == "DjangoPersistentProcessRunner"


def test_app_id_defaults_to_the_settings_package() -> None:
    settings = {k: v for k, v in PYNENC.items() if k != "app_id"}
    with override_settings(PYNENC=settings):
        assert project.config_values()["app_id"] == "tests"


def test_db_alias_shorthand() -> None:
    with override_settings(PYNENC={**PYNENC, "db_alias": "other"}):
        values = project.config_values()
    assert values["django_db_alias"] == "other"
    assert "db_alias" not in values


def test_environment_overrides_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNENC__NUM_PROCESSES", "7")
    app = project.build_app()
    assert app.runner.conf.num_processes == 7  # type: ignore[attr-defined]


def test_the_app_is_pynenc_s_instance_for_its_id() -> None:
    """A spawned worker unpickling the runner's app must get this very instance back,
    so task modules imported at ``django.setup()`` and the runner share one app."""
    app = project.build_app()
    assert Pynenc._instances[app.app_id] is app


def test_overrides_reach_the_runner_only() -> None:
    app = project.build_app()
    project.apply_overrides(app, {"num_processes": 3, "runner": {"queues": ["default"]}})
    assert app.runner.conf.num_processes == 3  # type: ignore[attr-defined]
    assert tuple(app.runner.conf.queues) == ("default",)


def test_autodiscovery_reports_import_errors(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "brokenapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text("raise RuntimeError('broken tasks module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from django.apps import apps

    # Installing the app runs pynenc_django's ready(), which autodiscovers at startup.
    with (
        pytest.raises(RuntimeError, match="broken tasks module"),
        override_settings(INSTALLED_APPS=["pynenc_django", "brokenapp"]),
    ):
        pass
    assert not apps.is_installed("brokenapp")
    sys.modules.pop("brokenapp.tasks", None)
    sys.modules.pop("brokenapp", None)


def test_autodiscovery_can_be_turned_off() -> None:
    with override_settings(PYNENC={**PYNENC, "autodiscover": False}):
        project.autodiscover_tasks()  # nothing imported, nothing raised


@pytest.mark.parametrize("how", ["environment", "settings"])
def test_every_reader_of_the_db_alias_agrees(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The backends, the runner, the admin and the commands read the alias alike: an
    admin on another database than the workers would show (and change) the wrong rows."""
    from pynenc_django import conf
    from pynenc_django.admin.config import db_alias
    from pynenc_django.runner import DjangoPersistentProcessRunner

    pynenc = {**PYNENC, "app_id": f"alias-{how}"}
    if how == "environment":
        monkeypatch.setenv("PYNENC__DJANGO_DB_ALIAS", "other")
    else:
        pynenc["db_alias"] = "other"
    with override_settings(PYNENC=pynenc):
        app = project.build_app()
        # Each backend's own configuration (using one would touch the missing database).
        readers = {
            cls.__name__: cls(
                config_values=app.config_values, config_filepath=app.config_filepath
            ).django_db_alias
            for cls in (
                conf.ConfigOrchestratorDjango,
                conf.ConfigBrokerDjango,
                conf.ConfigStateBackendDjango,
                conf.ConfigTriggerDjango,
                conf.ConfigClientDataStoreDjango,
            )
        }
        readers["runner"] = DjangoPersistentProcessRunner(app).db_alias
        readers["admin"] = db_alias()
    assert readers == dict.fromkeys(readers, "other")
