import contextlib

from django.apps import AppConfig


class PynencDjangoConfig(AppConfig):
    name = "pynenc_django"
    label = "pynenc_django"
    verbose_name = "pynenc"
    # Pinned so a project's DEFAULT_AUTO_FIELD never produces migrations for our models.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pynenc_django import checks  # noqa: F401  (registers the system checks)
        from pynenc_django.project import PynencSettingsError, autodiscover_tasks

        # A malformed PYNENC is reported by the pynenc_django.E002 system check.
        with contextlib.suppress(PynencSettingsError):
            autodiscover_tasks()
