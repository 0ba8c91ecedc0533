"""Django system checks: misconfiguration is reported by ``manage.py check`` (and before
every ``pynenc_runner`` start) with an id and a hint, not as a traceback at 3 a.m.

=====================  =============================================================
``pynenc_django.E001``  ``USE_TZ`` is off.
``pynenc_django.E002``  ``settings.PYNENC`` is not a dict.
``pynenc_django.E003``  ``settings.PYNENC`` has a key no pynenc setting matches.
``pynenc_django.E004``  The database alias is not in ``DATABASES``.
``pynenc_django.E005``  The database alias uses a vendor pynenc-django does not support.
``pynenc_django.E006``  ``runner_cls`` names no runnable pynenc runner.
``pynenc_django.E007``  A value cannot be used (wrong type, bad choice).
``pynenc_django.W001``  ``runner_cls`` is pynenc's PersistentProcessRunner, not ours.
=====================  =============================================================
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

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
    values = config_values()
    errors.extend(_check_alias(str(values.get("django_db_alias", "default"))))
    errors.extend(_check_runner(str(values.get("runner_cls"))))
    errors.extend(_check_values(values))
    return errors


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
    for cls in get_all_subclasses(ConfigPynencBase):
        extra = set(inspect.signature(cls).parameters) - {"config_values", "config_filepath"}
        if extra:
            continue  # per-task configs (ConfigTask) need a task to resolve against
        try:
            cls(config_values=values)
        except Exception as exc:  # cistell raises assorted types for bad values
            errors.append(
                Error(
                    f"settings.PYNENC has a value pynenc rejects ({cls.__name__}): {exc}",
                    hint="Check the type of each value against pynenc's configuration docs.",
                    id="pynenc_django.E007",
                )
            )
            break
    return errors
