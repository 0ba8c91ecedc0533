from django.apps import AppConfig


class PynencDjangoConfig(AppConfig):
    name = "pynenc_django"
    label = "pynenc_django"
    verbose_name = "pynenc"
    # Pinned so a project's DEFAULT_AUTO_FIELD never produces migrations for our models.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pynenc_django import checks  # noqa: F401  (registers the system checks)
