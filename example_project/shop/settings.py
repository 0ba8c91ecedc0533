"""Settings of the example shop: a small Django project whose background work runs on pynenc.

SQLite under ``var/`` by default (``EXAMPLE_VAR_DIR`` moves it, the runner logs and the
outgoing mail); ``DATABASE_URL`` (``postgres://...``, ``mysql://...``) selects another database.
Not production settings: the secret key is public and ``DEBUG`` is on.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EXAMPLE_VAR_DIR") or BASE_DIR / "var").resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-shop-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pynenc_django",
    "orders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"

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
            ],
        },
    },
]

# ---------------------------------------------------------------------------- database

_url = os.environ.get("DATABASE_URL", "").strip()
if _url:
    import dj_database_url  # pip install dj-database-url

    _db = dj_database_url.parse(_url)
    if _db["ENGINE"].endswith("mysql"):
        # pynenc's identifiers are case-sensitive: create the database with utf8mb4_bin.
        _db.setdefault("OPTIONS", {})["charset"] = "utf8mb4"
else:
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "shop.sqlite3",
        "OPTIONS": {
            # WAL: readers (the admin, the demo's progress bar) never wait for the
            # workers' writes. IMMEDIATE: our own transactions take the write lock up
            # front instead of failing to upgrade a read lock under concurrency.
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
# Task code gets Django's per-request connection hygiene in the runner's workers (the
# workers' own connection stays open whatever this says): a task's connection is reused for
# up to 60 s instead of being opened per task, and CONN_HEALTH_CHECKS replaces one the
# server dropped meanwhile (a restart, an idle timeout) before a task uses it.
_db["CONN_MAX_AGE"] = 60
_db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True  # pynenc_django requires it (system check pynenc_django.E001)

STATIC_URL = "static/"

# Receipts are "sent" as files: var/mail/*.log.
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = VAR_DIR / "mail"
DEFAULT_FROM_EMAIL = "shop@example.com"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pynenc_django": {"handlers": ["console"], "level": "INFO"}},
}

# ---------------------------------------------------------------------------- pynenc

PYNENC = {
    "app_id": "shop",
    # No "queues": every task is on pynenc's "default" queue, waiting parents included. A
    # worker whose task waits for others runs, inside the wait, those still queued, so
    # waiting orders may hold every worker without leaving their children to nobody.
    # The cluster-wide services (triggers: cron ticks, events; recovery) run every second
    # in whichever runner asks first (django_atomic_service_every_sec, the default), and
    # at once when an event is emitted: nothing to tune here.
    # Lost runner hosts (pynenc_django's defaults, spelled out): each runner refreshes its
    # workers' heartbeats every 5 s, and a worker whose heartbeat is 30 s old has lost its
    # host with it; any live runner then puts its PENDING/RUNNING invocations back in their
    # queue, within about 35 s of the loss. The demo freezes a runner for one atomic-service
    # cycle at most (15 s), well within the bound, so nothing of it is taken.
    "django_heartbeat_interval_sec": 5.0,
    "django_runner_dead_after_sec": 30.0,
    # A runner that has sent no heartbeat for a minute leaves the atomic-service rotation
    # (the others take its slot) and shows as dead in the admin and `pynenc_status`
    # (pynenc's default: 10 minutes). pynenc's own recover_running_invocations uses it too,
    # but only from its */15 cron: the runners' recovery above acts long before.
    "runner_considered_dead_after_minutes": 1.0,
    # Graceful stop (SIGTERM, Ctrl-C): running tasks get 10 s to finish.
    "django_shutdown_grace_sec": 10.0,
    # Plain log lines: the demo and `manage.py serve` write the runners' output to files.
    "log_use_colors": False,
}

# The sales report's schedule: every minute, so that the demo sees it run. A real shop
# would use something like "0 2 * * *" (02:00 every night).
SHOP_SALES_REPORT_CRON = os.environ.get("SHOP_SALES_REPORT_CRON", "* * * * *")
