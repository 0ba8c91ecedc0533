"""Settings for the test suite.

``DATABASE_URL`` picks the database (SQLite by default). The test database name is
also the database's ``NAME``: runner processes that pynenc spawns set Django up from
this module on their own and must land in the very database pytest-django created.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "pynenc-django-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    # Any order works: pynenc_django gives the admin site its index template (overview link).
    "pynenc_django",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "bench.seeding",  # manage.py pynenc_seed: the admin tests' realistic rows
    "django_celery_beat",
    "pynenc_django.beat",
]

# The admin (tests/admin): sessions, auth, messages and CSRF, as in a real project.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "tests.urls"
# Django's advice for test suites: every admin test makes its users, and the default
# hasher spends about half a second on each (the browser test still logs in by form).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STATIC_URL = "/static/"
ALLOWED_HOSTS = ["*"]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_url = os.environ.get("DATABASE_URL", "").strip()
_suffix = os.environ.get("PYNENC_DJANGO_TEST_DB_SUFFIX", "")
if _url:
    _db = dj_database_url.parse(_url, conn_max_age=0)
    _name = f"test_pynenc_django{_suffix}"
else:
    _dir = BASE_DIR.parent / ".test-dbs"
    _dir.mkdir(exist_ok=True)
    _name = str(_dir / f"test_pynenc_django{_suffix}.sqlite3")
    _db = {"ENGINE": "django.db.backends.sqlite3"}
    _db["OPTIONS"] = {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;"}

_db["NAME"] = _name
_db["TEST"] = {"NAME": _name}
if _db["ENGINE"].endswith("mysql"):
    _db.setdefault("OPTIONS", {}).update({"charset": "utf8mb4"})
    _db["TEST"].update({"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_bin"})
DATABASES = {"default": _db}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pynenc_django": {"handlers": ["console"], "level": "WARNING"}},
}

# The project-level pynenc app (``from pynenc_django import app``) used by the runner
# tests; pynenc's conformance suites build their own apps and ignore it.
PYNENC = {
    "app_id": "pynenc-django-runner-tests",
    "print_arguments": False,
    "runner_loop_sleep_time_sec": 0.05,
    "invocation_wait_results_sleep_time_sec": 0.05,
    "num_processes": 2,
    # tests/calling: retries 1 s then 2 s apart (no jitter), so their gaps are checkable.
    "task": {
        "tests.project.jobs.calling.flaky": {"retry_backoff": 1.0, "retry_jitter": False},
        # README's "Coming from Celery" (tests/runner/test_coming_from_celery.py).
        "celery_examples.tasks.*": {"retry_backoff": 0.2},
        # tests/runner/test_time_limits.py: a hard limit by key, soft limits by pattern.
        "tests.project.jobs.limits.over_hard_limit": {"time_limit": 1.0},
        "tests.project.jobs.limits.soft_*": {"soft_time_limit": 0.5, "time_limit": 10.0},
    },
}

# Django >= 6.0: ``@task`` functions run on pynenc runners (ignored by Django 5.2).
TASKS = {"default": {"BACKEND": "pynenc_django.task_backend.PynencTaskBackend"}}
