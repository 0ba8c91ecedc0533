"""tests/project's settings plus an app that cannot start in worker processes."""

from tests.project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.project_noguard.broken"]  # noqa: F405
