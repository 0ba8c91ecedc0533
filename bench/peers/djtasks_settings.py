"""Django settings of the django-tasks-db peer benchmark (``bench.peers.djtasks_settings``).

The database is ``BENCH_DJTASKS_DATABASE_URL`` with ``CONN_MAX_AGE`` from
``BENCH_DJTASKS_CONN_MAX_AGE`` (default 0, Django's: ``db_worker`` then reconnects on each
loop, as a default project does) and ``CONN_HEALTH_CHECKS`` on when
``BENCH_DJTASKS_HEALTH_CHECKS`` is non-empty (default off, Django's). Tasks go to django-tasks-db's ``DatabaseBackend`` as its
README configures it; everything else is Django's defaults, ``DEBUG`` off.
"""

import os

import dj_database_url

SECRET_KEY = "pynenc-django-bench-peers"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = ["django_tasks_db", "bench.peers.djtasks_app"]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get(
            "BENCH_DJTASKS_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/pynenc_bench_djtasks",
        ),
        conn_max_age=int(os.environ.get("BENCH_DJTASKS_CONN_MAX_AGE", "0")),
        conn_health_checks=bool(os.environ.get("BENCH_DJTASKS_HEALTH_CHECKS")),
    )
}

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
