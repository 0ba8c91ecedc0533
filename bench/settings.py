"""Django settings of the benchmark project (``DJANGO_SETTINGS_MODULE=bench.settings``).

``BENCH_DATABASE_URL`` picks a server database (its NAME is used as is, e.g.
``postgres://postgres@127.0.0.1:5432/pynenc_django_bench``); without it, SQLite at
``BENCH_SQLITE_PATH``. ``BENCH_CONN_MAX_AGE`` sets ``CONN_MAX_AGE`` (default 0, Django's), and a
non-empty ``BENCH_CONN_HEALTH_CHECKS`` turns ``CONN_HEALTH_CHECKS`` on (default off, Django's).
``BENCH_PYNENC_LOG_LEVEL`` sets pynenc's ``logging_level`` (default: pynenc's, ``info``), so
throughput runs are not dominated by per-task INFO lines. Everything else is pynenc-django's
defaults.
"""

import os
import tempfile
from pathlib import Path

import dj_database_url

SECRET_KEY = "pynenc-django-bench"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = ["pynenc_django", "bench.benchapp", "bench.seeding"]

_url = os.environ.get("BENCH_DATABASE_URL", "").strip()
_conn_max_age = int(os.environ.get("BENCH_CONN_MAX_AGE", "0"))
_health_checks = bool(os.environ.get("BENCH_CONN_HEALTH_CHECKS", "").strip())
if _url:
    _db = dj_database_url.parse(_url, conn_max_age=_conn_max_age, conn_health_checks=_health_checks)
    if _db["ENGINE"].endswith("mysql"):
        _db.setdefault("OPTIONS", {}).update({"charset": "utf8mb4"})
else:
    _path = os.environ.get("BENCH_SQLITE_PATH") or str(
        Path(tempfile.gettempdir()) / "pynenc_django_bench.sqlite3"
    )
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _path,
        "CONN_MAX_AGE": _conn_max_age,
        "CONN_HEALTH_CHECKS": _health_checks,
        "OPTIONS": {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;"},
    }
DATABASES = {"default": _db}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pynenc_django": {"handlers": ["console"], "level": "WARNING"}},
}

# pynenc's defaults otherwise: runner_loop_sleep_time_sec 0.1, django_idle_wait_max_sec 1.0,
# django_heartbeat_interval_sec 5, atomic_service_check_interval_minutes 0.5.
PYNENC = {
    "app_id": "pynenc-django-bench",
    "print_arguments": False,
}
if _log_level := os.environ.get("BENCH_PYNENC_LOG_LEVEL", "").strip().lower():
    PYNENC["logging_level"] = _log_level
