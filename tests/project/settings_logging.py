"""The project settings with ``LOGGING`` sending pynenc's records to a file.

``PYNENC_DJANGO_TEST_LOG_FILE`` names the file; ``PYNENC_DJANGO_TEST_LOG_LEVEL`` is the
``pynenc`` logger's level (INFO by default). Nothing else receives pynenc's records.
"""

import os

from tests.project.settings import *  # noqa: F403

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(process)d %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "file": {
            "class": "logging.FileHandler",
            "filename": os.environ["PYNENC_DJANGO_TEST_LOG_FILE"],
            "formatter": "plain",
        }
    },
    "loggers": {
        "pynenc": {
            "handlers": ["file"],
            "level": os.environ.get("PYNENC_DJANGO_TEST_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
    },
}
