"""The test settings plus an installed app whose ``tasks.py`` is autodiscovered."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.project.jobs", "tests.project.guarded"]  # noqa: F405
