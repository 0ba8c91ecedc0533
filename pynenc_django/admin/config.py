"""What the admin knows about each pynenc app's configuration, without importing task code.

Several apps share the tables. The project's own app is configured by ``settings.PYNENC``;
any other app is known through the ``AppInfoRecord`` it stored (its ``config_values``).
Task options given to ``@app.task(...)`` live only in code: they are used when the task
is already registered in this process (the project's tasks are autodiscovered at
start-up), otherwise pynenc's configuration alone decides (``ConfigTask``), and the admin
says so.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pynenc_django.conf import ConfigDjango, atomic_service_period

if TYPE_CHECKING:
    from django.http import HttpRequest
    from pynenc.conf.config_pynenc import ConfigPynenc


def db_alias() -> str:
    """The ``DATABASES`` alias pynenc's tables live in, as the workers resolve it
    (``PYNENC["db_alias"]``, or ``PYNENC__DJANGO_DB_ALIAS`` in the environment)."""
    from pynenc_django.project import django_setting

    return str(django_setting("django_db_alias"))


def project_app_id() -> str | None:
    """The ``app_id`` of the project's own app, or ``None`` without ``settings.PYNENC``."""
    from pynenc_django.project import PynencSettingsError, config_values, raw_settings

    try:
        if raw_settings() is None:
            return None
        return str(config_values()["app_id"])
    except PynencSettingsError:
        return None


def request_cache(request: HttpRequest | None) -> dict[str, Any]:
    """What the admin's helpers computed for this request (a fresh dict without one)."""
    if request is None:
        return {}
    cache = getattr(request, "_pynenc_admin_cache", None)
    if cache is None:
        cache = {}
        # Our attribute on Django's request, which django-stubs (rightly) do not know.
        request._pynenc_admin_cache = cache  # type: ignore[attr-defined]
    return cache


def app_config_values(app_id: str, request: HttpRequest | None = None) -> dict[str, Any]:
    """pynenc ``config_values`` of ``app_id``, read once per request."""
    cache = request_cache(request)
    key = f"config:{app_id}"
    if key not in cache:
        cache[key] = _load_config_values(app_id)
    return cache[key]


def prime_app_config(app_id: str, app_info_json: str | None, request: HttpRequest) -> None:
    """Use an ``AppInfoRecord`` read by a query the page runs anyway (one query less)."""
    cache = request_cache(request)
    key = f"config:{app_id}"
    if key not in cache and app_id != project_app_id():
        cache[key] = _config_from_app_info(app_id, app_info_json)


def _config_from_app_info(app_id: str, raw: str | None) -> dict[str, Any]:
    from pynenc_django.builder import COMPONENT_CLASSES

    try:
        values = dict(json.loads(raw).get("config_values") or {}) if raw else {}
    except (ValueError, AttributeError):
        values = {}
    # The rows are in these tables, so whatever the app was built with, the admin reads and
    # writes them through the Django backends on the admin's alias.
    values.update(COMPONENT_CLASSES)
    values["app_id"] = app_id
    values["django_db_alias"] = db_alias()
    return values


def _load_config_values(app_id: str) -> dict[str, Any]:
    from pynenc_django.builder import COMPONENT_CLASSES
    from pynenc_django.models import AppInfoRecord
    from pynenc_django.project import config_values

    if app_id == project_app_id():
        values = dict(config_values())
        values.update(COMPONENT_CLASSES)
        values["app_id"] = app_id
        values["django_db_alias"] = db_alias()
        return values
    raw = (
        AppInfoRecord.objects.using(db_alias())
        .filter(app_id=app_id)
        .order_by()
        .values_list("app_info_json", flat=True)
        .first()
    )
    return _config_from_app_info(app_id, raw)


def _frozen(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


@functools.lru_cache(maxsize=64)
def _pynenc_conf(frozen: str) -> ConfigPynenc:
    from pynenc.conf.config_pynenc import ConfigPynenc

    return ConfigPynenc(config_values=json.loads(frozen))


def pynenc_conf(app_id: str, request: HttpRequest | None = None) -> ConfigPynenc:
    """pynenc's settings of ``app_id`` (``runner_considered_dead_after_minutes``, ...)."""
    return _pynenc_conf(_frozen(app_config_values(app_id, request)))


@functools.lru_cache(maxsize=64)
def _django_conf(frozen: str) -> ConfigDjango:
    return ConfigDjango(config_values=json.loads(frozen))


def django_conf(app_id: str, request: HttpRequest | None = None) -> ConfigDjango:
    """pynenc-django's settings of ``app_id`` (``django_stuck_wait_after_sec``, ...)."""
    return _django_conf(_frozen(app_config_values(app_id, request)))


@functools.lru_cache(maxsize=64)
def _atomic_period(frozen: str) -> timedelta:
    return atomic_service_period(json.loads(frozen))


def atomic_period(app_id: str, request: HttpRequest | None = None) -> timedelta:
    """How often ``app_id``'s atomic services are expected to run (:func:`atomic_service_period`)."""
    return _atomic_period(_frozen(app_config_values(app_id, request)))


@dataclass(frozen=True)
class TaskRoute:
    """Where pynenc routes invocations of a task: its queue and broker priority."""

    queue: str
    priority: float
    #: ``True`` when the task is registered in this process, so ``@app.task`` options count.
    from_code: bool
    #: pynenc reuses a REGISTERED invocation of the same call instead of adding one.
    registration_concurrency: bool = False
    #: Arguments must be indexed for pynenc's concurrency control lookups.
    concurrency_control: bool = False


def _route_from_conf(conf: Any, priority: float, from_code: bool) -> TaskRoute:
    from pynenc.conf.config_task import ConcurrencyControlType

    disabled = ConcurrencyControlType.DISABLED
    registration = conf.registration_concurrency != disabled
    return TaskRoute(
        conf.queue,
        priority,
        from_code,
        registration_concurrency=registration,
        concurrency_control=registration or conf.running_concurrency != disabled,
    )


@functools.lru_cache(maxsize=1024)
def _config_route(frozen: str, task_id_key: str) -> TaskRoute:
    from pynenc.conf.config_broker import ConfigBroker
    from pynenc.conf.config_task import ConfigTask
    from pynenc.identifiers.task_id import TaskId

    values = json.loads(frozen)
    conf = ConfigTask(task_id=TaskId.from_key(task_id_key), config_values=values)
    broker = ConfigBroker(config_values=values)
    return _route_from_conf(conf, broker.get_priority_for_task(task_id_key, conf.priority), False)


def task_route(app_id: str, task_id_key: str, request: HttpRequest | None = None) -> TaskRoute:
    """The queue and priority of a task: from its registration in this process when there
    is one, else from the app's configuration (never by importing its module)."""
    from pynenc import Pynenc

    app = Pynenc._instances.get(app_id)
    if app is not None:
        for task_id, task in list(app.tasks.items()):
            if task_id.key == task_id_key:
                return _route_from_conf(task.conf, task.broker_priority, True)
    return _config_route(_frozen(app_config_values(app_id, request)), task_id_key)


def app_queues(app_id: str, request: HttpRequest | None = None) -> list[str]:
    """The queues the app's broker accepts (pynenc's ``queues`` setting, default first)."""
    from pynenc.conf.config_broker import ConfigBroker

    return list(ConfigBroker(config_values=app_config_values(app_id, request)).queues)


def build_app(app_id: str, request: HttpRequest | None = None) -> Any:
    """A pynenc app for ``app_id`` on the Django backends, for the admin's actions.

    The project's app is reused when it is the one asked for (its tasks are registered).
    """
    from pynenc import Pynenc

    existing = Pynenc._instances.get(app_id)
    if existing is not None:
        return existing
    return Pynenc(config_values=app_config_values(app_id, request))
