"""Django system checks for settings pynenc-django cannot work without."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


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
    return errors
