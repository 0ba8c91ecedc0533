"""Django system checks: misconfiguration is reported by ``manage.py check`` (and before
every ``pynenc_runner``, ``runserver`` or ``migrate``) with an id and a hint, not as a
traceback at 3 a.m. Every message names the key and the bad value, one message each.

=====================  =============================================================
``pynenc_django.E001``  ``USE_TZ`` is off.
``pynenc_django.E002``  ``settings.PYNENC`` is not a dict.
``pynenc_django.E003``  ``settings.PYNENC`` has a key no pynenc setting matches.
``pynenc_django.E004``  The database alias is not in ``DATABASES``.
``pynenc_django.E005``  The database alias uses a vendor pynenc-django does not support.
``pynenc_django.E006``  ``runner_cls`` names no runnable pynenc runner.
``pynenc_django.E007``  A value cannot be used: wrong type, bad choice, or values that do
                        not fit together (``django_runner_dead_after_sec`` under three
                        heartbeats).
``pynenc_django.E008``  A value is out of range: ``num_processes``/``max_processes``
                        under 1, a negative duration, interval, timeout or count, a zero
                        interval (:data:`pynenc_django.conf.BOUNDS`).
``pynenc_django.E009``  ``queues`` is not a non-empty list of valid, distinct queue
                        names (a string such as ``"a,b"`` included).
``pynenc_django.W001``  ``runner_cls`` is pynenc's PersistentProcessRunner, not ours.
``pynenc_django.W002``  A registered task routes to a queue no runner consumes (not in
                        ``PYNENC["queues"]``): its invocations would wait forever.
=====================  =============================================================

The values are checked in ``settings.PYNENC`` and pynenc's ``PYNENC__<NAME>`` environment
variables, by the same rules (:mod:`pynenc_django.conf`) the backends and the runner apply.
While any is wrong, the tasks modules are not autodiscovered, so commands reach these
checks instead of failing in ``AppConfig.ready()``; W002 needs them, so it waits for the
errors to be fixed.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from pynenc_django.conf import (
    BAD_QUEUES,
    OUT_OF_RANGE,
    WRONG_TYPE,
    SettingProblem,
    setting_problems,
)
from pynenc_django.vendors import SUPPORTED_VENDORS


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if not settings.USE_TZ:
        errors.append(
            Error(
                "pynenc_django needs USE_TZ = True.",
                hint=(
                    "pynenc records every status change, heartbeat and cron tick as a UTC "
                    "instant; with USE_TZ = False they cannot be stored unambiguously. Set "
                    "USE_TZ = True (Django's default since 5.0)."
                ),
                id="pynenc_django.E001",
            )
        )
    errors.extend(check_pynenc_setting())
    return errors


def check_pynenc_setting() -> list[CheckMessage]:
    from pynenc_django.project import (
        DJANGO_KEYS,
        PynencSettingsError,
        config_values,
        known_pynenc_settings,
        raw_settings,
    )

    try:
        user = raw_settings()
    except PynencSettingsError as exc:
        return [
            Error(
                str(exc),
                hint='For example: PYNENC = {"app_id": "shop", "num_processes": 4}',
                id="pynenc_django.E002",
            )
        ]
    errors: list[CheckMessage] = []
    known = known_pynenc_settings()
    for key in user or {}:
        if key in DJANGO_KEYS or key in known:
            continue
        close = difflib.get_close_matches(str(key), sorted(known | set(DJANGO_KEYS)), n=1)
        errors.append(
            Error(
                f"settings.PYNENC has an unknown key {key!r}.",
                hint=(f"Did you mean {close[0]!r}? " if close else "")
                + "Keys are pynenc setting names (see pynenc's configuration docs) or "
                + ", ".join(sorted(DJANGO_KEYS))
                + ".",
                id="pynenc_django.E003",
            )
        )
    problems = setting_problems(user)
    errors.extend(_problem_error(problem) for problem in problems)
    values = config_values()
    errors.extend(_check_alias(str(values.get("django_db_alias", "default"))))
    errors.extend(_check_runner(str(values.get("runner_cls"))))
    if not problems:  # pynenc's classes would only repeat the first one, without its key
        errors.extend(_check_values(values))
    if not any(error.is_serious() for error in errors):
        errors.extend(_check_task_queues(values))
    return errors


_PROBLEM_IDS = {WRONG_TYPE: "E007", OUT_OF_RANGE: "E008", BAD_QUEUES: "E009"}
_PROBLEM_HINTS = {
    WRONG_TYPE: "Check the type of the value against pynenc's configuration docs.",
    OUT_OF_RANGE: "Durations, intervals, timeouts and counts are never negative; "
    "num_processes and max_processes are at least 1 (leave them out for the CPU count).",
    BAD_QUEUES: 'Write a list of names, for example PYNENC["queues"] = ["default", "emails"] '
    "(the 'default' queue is always included); names use letters, digits, '_', '.', '-'.",
}


def _problem_error(problem: SettingProblem) -> CheckMessage:
    return Error(
        f"{str(problem).rstrip('.')}.",
        hint=_PROBLEM_HINTS[problem.kind],
        id=f"pynenc_django.{_PROBLEM_IDS[problem.kind]}",
    )


def _check_alias(alias: str) -> list[CheckMessage]:
    if alias not in settings.DATABASES:
        return [
            Error(
                f"pynenc's database alias {alias!r} is not in settings.DATABASES.",
                hint=f"Use one of {', '.join(map(repr, settings.DATABASES))} "
                "as PYNENC['db_alias'].",
                id="pynenc_django.E004",
            )
        ]
    from django.db import connections

    vendor = connections[alias].vendor
    if vendor not in SUPPORTED_VENDORS:
        return [
            Error(
                f"pynenc_django does not support the {vendor!r} database (alias {alias!r}).",
                hint="Use PostgreSQL, MariaDB/MySQL or SQLite for pynenc's tables; "
                "PYNENC['db_alias'] may point at a different database than your models.",
                id="pynenc_django.E005",
            )
        ]
    return []


def _check_runner(name: str) -> list[CheckMessage]:
    from pynenc_django.project import runnable_runners

    runners = runnable_runners()
    if name == "PersistentProcessRunner":
        return [
            Warning(
                "PYNENC['runner_cls'] is pynenc's PersistentProcessRunner, whose spawned "
                "workers unpickle your tasks before Django is set up.",
                hint="Use 'DjangoPersistentProcessRunner' (the default): the same runner, "
                "with django.setup() first, no busy polling and crash recovery.",
                id="pynenc_django.W001",
            )
        ]
    if name in runners:
        return []
    close = difflib.get_close_matches(name, sorted(runners), n=1)
    return [
        Error(
            f"PYNENC['runner_cls'] is {name!r}, which is not a runnable pynenc runner.",
            hint=(f"Did you mean {close[0]!r}? " if close else "")
            + f"Available: {', '.join(sorted(runners))}.",
            id="pynenc_django.E006",
        )
    ]


def _check_values(values: dict[str, Any]) -> list[CheckMessage]:
    """Let pynenc's own config classes parse every value, as the runner will."""
    from pynenc.conf.config_base import ConfigPynencBase
    from pynenc.util.subclasses import get_all_subclasses

    errors: list[CheckMessage] = []
    seen: set[str] = set()
    for cls in get_all_subclasses(ConfigPynencBase):
        extra = set(inspect.signature(cls).parameters) - {"config_values", "config_filepath"}
        if extra:
            continue  # per-task configs (ConfigTask) need a task to resolve against
        try:
            cls(config_values=values)
        except Exception as exc:  # cistell raises assorted types for bad values
            if str(exc) in seen:
                continue
            seen.add(str(exc))
            errors.append(
                Error(
                    f"settings.PYNENC has a value pynenc rejects ({cls.__name__}): {exc}",
                    hint="Check each value against pynenc's configuration docs "
                    "(and the PYNENC__* environment variables, a pynenc config file).",
                    id="pynenc_django.E007",
                )
            )
    return errors


def _check_task_queues(values: dict[str, Any]) -> list[CheckMessage]:
    """Tasks are registered when their modules are autodiscovered; one routed to a queue
    no runner consumes would sit REGISTERED forever, with only a log line to say why."""
    from pynenc.conf.config_broker import ConfigBroker
    from pynenc.conf.config_runner import ConfigRunner

    from pynenc_django.project import app_built, declared_queues, get_app

    if not app_built():  # no app, no task registered yet
        return []
    try:
        declared = ConfigBroker(config_values=values).queues
        consumed = ConfigRunner(config_values=values).queues or declared
    except Exception:  # reported by E007 (an environment variable, a config file)
        return []
    warnings: list[CheckMessage] = []
    for queue, task_ids in sorted(declared_queues(get_app()).items()):
        if queue in consumed:
            continue
        for task_id in task_ids:
            warnings.append(
                Warning(
                    f"Task {task_id!r} routes to queue {queue!r}, which no runner consumes "
                    f"(runners consume {', '.join(map(repr, consumed))}): its invocations "
                    "would wait forever.",
                    hint=f'Add {queue!r} to PYNENC["queues"] '
                    f"(now {list(declared)!r}), so every runner consumes it; or dedicate "
                    f"runners to it with `manage.py pynenc_runner --queues {queue}` and "
                    'add "pynenc_django.W002" to SILENCED_SYSTEM_CHECKS.',
                    id="pynenc_django.W002",
                )
            )
    return warnings
