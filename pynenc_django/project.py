"""The project's pynenc app, built from ``settings.PYNENC``.

    # settings.py
    PYNENC = {"app_id": "shop", "num_processes": 4}

    # orders/tasks.py  (autodiscovered in every installed app)
    from pynenc_django import app

    @app.task
    def send_receipt(order_id: int) -> None: ...

Every key of ``PYNENC`` is a pynenc setting (``app_id``, ``runner_cls``, ``queues``,
``num_processes``, ``max_pending_seconds``, ...) except the few Django-side keys in
:data:`DJANGO_KEYS`. pynenc's ``PYNENC__*`` environment variables still override them.
The Django backends and :class:`~pynenc_django.runner.DjangoPersistentProcessRunner` are
the defaults; misconfiguration is reported by ``manage.py check`` (``pynenc_django.E0xx``),
and an app is never built from values the check refuses (:class:`PynencSettingsError`).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from pynenc_django.builder import COMPONENT_CLASSES, DEFAULT_SETTINGS
from pynenc_django.conf import PynencSettingsError, SettingProblem, config_fields, setting_problems

if TYPE_CHECKING:
    from pynenc import Pynenc

DEFAULT_RUNNER = "DjangoPersistentProcessRunner"

#: Keys of ``settings.PYNENC`` that configure the integration rather than pynenc.
DJANGO_KEYS = {
    "db_alias": "Shorthand for pynenc's django_db_alias: the DATABASES alias to use.",
    "autodiscover": "Import the tasks module of every installed app at startup (True).",
    "tasks_module": "Name of the modules to autodiscover ('tasks').",
}


# pynenc's placeholder runners cannot execute anything.
NOT_RUNNABLE = ("DummyRunner", "ExternalRunner")


def raw_settings() -> dict[str, Any] | None:
    """``settings.PYNENC`` as written, or ``None`` when the project does not define it."""
    from django.conf import settings

    value = getattr(settings, "PYNENC", None)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PynencSettingsError(
            f"settings.PYNENC must be a dict of pynenc settings, got {type(value).__name__}"
        )
    return value


def default_app_id() -> str:
    """The project's package name (``shop`` for ``shop.settings``), so two projects on one
    database never share queues by accident."""
    from django.conf import settings

    module = (
        getattr(settings, "SETTINGS_MODULE", None) or os.environ.get("DJANGO_SETTINGS_MODULE") or ""
    )
    return module.split(".")[0] or "django"


def config_values(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """pynenc ``config_values`` for the project: our defaults, then ``PYNENC``, then
    ``overrides`` (the runner command's options)."""
    user = dict(raw_settings() or {})
    values: dict[str, Any] = {
        "app_id": default_app_id(),
        "runner_cls": DEFAULT_RUNNER,
        **COMPONENT_CLASSES,
        **DEFAULT_SETTINGS,
    }
    if "db_alias" in user:
        values["django_db_alias"] = user["db_alias"]
    values.update({k: v for k, v in user.items() if k not in DJANGO_KEYS})
    if "queues" in user:
        # pynenc reads a top-level ``queues`` as the runners' selection too, so a runner
        # would consume only these, never 'default': runners consume every queue the
        # broker declares unless told otherwise (``pynenc_runner --queues``).
        values["runner"] = {"queues": [], **dict(values.get("runner") or {})}
    values.update(overrides or {})
    return values


def settings_problems() -> list[SettingProblem]:
    """Every unusable value of ``settings.PYNENC`` and ``PYNENC__*`` variables, by key."""
    return setting_problems(raw_settings())


def ensure_valid_settings() -> None:
    """Raise :class:`PynencSettingsError` naming every unusable value, before pynenc's own
    parsing would raise a ``TypeError`` naming none."""
    if problems := settings_problems():
        raise PynencSettingsError(
            "pynenc cannot use these settings (manage.py check explains each): "
            + "; ".join(str(problem).rstrip(".") for problem in problems)
        )


def django_setting(name: str) -> Any:
    """One integration setting (``django_db_alias``, ...) resolved as the backends and the
    runner resolve it: pynenc's ``PYNENC__*`` environment variables, then
    ``settings.PYNENC``, then the default. The admin and the commands read settings here,
    so they always act on the database the workers use."""
    from pynenc_django.conf import ConfigDjango

    try:
        values = config_values()
    except PynencSettingsError:
        values = {}
    environment = sorted((k, v) for k, v in os.environ.items() if k.startswith("PYNENC"))
    key = repr((sorted(values.items()), environment))
    config = _django_configs.get(key)
    if config is None:  # pynenc's config reads the environment and files: once per input
        if len(_django_configs) >= 8:
            _django_configs.clear()
        config = _django_configs[key] = ConfigDjango(config_values=values)
    return getattr(config, name)


_django_configs: dict[str, Any] = {}


def known_pynenc_settings() -> set[str]:
    """Every setting name some pynenc config class (ours and plugins' included) accepts,
    and the section names of pynenc's per-class settings (``"task"``: per-task options)."""
    from pynenc.conf.config_base import ConfigPynencBase
    from pynenc.util.subclasses import get_all_subclasses

    sections = {
        cls.__name__.replace("Config", "").lower() for cls in get_all_subclasses(ConfigPynencBase)
    }
    return set(config_fields()) | sections


def runnable_runners() -> dict[str, type]:
    """Runner classes a project can run, by name (plugins' included)."""
    from pynenc.runner.base_runner import BaseRunner
    from pynenc.util.subclasses import get_all_subclasses

    import pynenc_django.runner  # noqa: F401  (registers DjangoPersistentProcessRunner)

    return {
        cls.__name__: cls
        # mypy allows only concrete classes for type[T]; BaseRunner is abstract (and
        # the abstract subclasses are filtered out just below).
        for cls in get_all_subclasses(BaseRunner)  # type: ignore[type-abstract]
        if cls.__name__ not in NOT_RUNNABLE and not getattr(cls, "__abstractmethods__", None)
    }


def build_app(overrides: dict[str, Any] | None = None) -> Pynenc:
    """A new pynenc app from the project's settings, registered as *the* instance for its
    ``app_id`` in this process (see :func:`get_app`)."""
    from pynenc import Pynenc

    # No database access here: this runs while Django autodiscovers tasks modules.
    app = Pynenc(config_values=config_values(overrides))
    # pynenc's multiton: an app unpickled in a spawned worker reuses this instance, so the
    # tasks modules imported at django.setup() and the runner share one app.
    Pynenc._instances[app.app_id] = app
    return app


def apply_overrides(app: Pynenc, overrides: dict[str, Any]) -> None:
    """Change settings of a built app (the runner command's options) before it runs.

    Components are rebuilt lazily from the new values; tasks keep their registration.
    """
    if not overrides:
        return
    app.config_values = {**(app.config_values or {}), **overrides}
    app._reset_cached_components()
    app._runner_instance = None


@functools.cache
def get_app() -> Pynenc:
    """The project's pynenc app (one per process), built on first use.

    :raises PynencSettingsError: a value of ``settings.PYNENC`` cannot be used.
    """
    ensure_valid_settings()
    return build_app()


def app_built() -> bool:
    """Whether this process built the project's app (no task is registered before)."""
    return get_app.cache_info().currsize > 0


def declared_queues(app: Pynenc) -> dict[str, list[str]]:
    """Queue -> ids of the app's registered tasks that route there (``@app.task(queue=...)``
    or per-task settings)."""
    queues: dict[str, list[str]] = {}
    for task_id, task in list(app.tasks.items()):
        try:
            queue = str(task.conf.queue)
        except Exception:  # a per-task setting pynenc rejects: its own check reports it
            continue
        queues.setdefault(queue, []).append(task_id.config_key)
    return queues


def autodiscover_tasks() -> None:
    """Import ``<app>.tasks`` for every installed app, as the admin does for ``admin.py``.

    A missing module is skipped; an error *inside* one propagates, because a task module
    that fails to import means tasks that silently never run.
    """
    from django.utils.module_loading import autodiscover_modules

    settings = raw_settings()
    if settings is None or not settings.get("autodiscover", True):
        return
    autodiscover_modules(str(settings.get("tasks_module", "tasks")))
