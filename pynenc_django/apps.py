from django.apps import AppConfig


class PynencDjangoConfig(AppConfig):
    name = "pynenc_django"
    label = "pynenc_django"
    verbose_name = "pynenc"
    # Pinned so a project's DEFAULT_AUTO_FIELD never produces migrations for our models.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pynenc_django import checks  # noqa: F401  (registers the system checks)
        from pynenc_django.project import (
            PynencSettingsError,
            autodiscover_tasks,
            settings_problems,
        )

        # With a malformed PYNENC, importing the tasks modules would stop every manage.py
        # command (runserver, check, migrate) at the first bad value, with a traceback:
        # skip them, and let the system checks (pynenc_django.E0xx) name every bad value.
        try:
            if settings_problems():
                return
        except PynencSettingsError:  # PYNENC is not a dict: pynenc_django.E002
            return
        autodiscover_tasks()
