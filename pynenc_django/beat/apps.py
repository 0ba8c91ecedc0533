from django.apps import AppConfig, apps
from django.core.exceptions import ImproperlyConfigured


class PynencBeatConfig(AppConfig):
    name = "pynenc_django.beat"
    label = "pynenc_django_beat"
    verbose_name = "pynenc periodic tasks"
    # Pinned so a project's DEFAULT_AUTO_FIELD never produces migrations for our model.
    default_auto_field = "django.db.models.BigAutoField"

    def import_models(self) -> None:
        # Before our model's foreign key to PeriodicTask fails with Django's generic
        # "lazy reference" error: say which app is missing.
        if not apps.is_installed("django_celery_beat"):
            raise ImproperlyConfigured(
                "pynenc_django.beat runs django-celery-beat's PeriodicTask rows: add "
                '"django_celery_beat" to INSTALLED_APPS too (pip install pynenc-django[beat]).'
            )
        super().import_models()

    def ready(self) -> None:
        from pynenc_django.beat import checks  # noqa: F401  (registers the system checks)
