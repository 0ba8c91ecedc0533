"""pynenc configuration classes for the Django backends.

Every setting goes through pynenc's own config system (cistell), so it can be given to
``PynencBuilder().django(db_alias=...)``, ``Pynenc(config_values=...)``, a pynenc config
file, or environment variables such as ``PYNENC__DJANGO_DB_ALIAS``.
"""

from typing import Any

from cistell import ConfigField
from pynenc.conf.config_base import ConfigPynencBase
from pynenc.conf.config_broker import ConfigBroker
from pynenc.conf.config_client_data_store import ConfigClientDataStore
from pynenc.conf.config_orchestrator import ConfigOrchestrator
from pynenc.conf.config_runner import ConfigPersistentProcessRunner
from pynenc.conf.config_state_backend import ConfigStateBackend
from pynenc.conf.config_trigger import ConfigTrigger

#: ``django_runner_dead_after_sec`` spans at least this many heartbeat intervals.
MIN_BEATS_BEFORE_DEAD = 3


class ConfigDjango(ConfigPynencBase):
    """Settings shared by every Django backend.

    :cvar ConfigField[str] django_db_alias:
        The ``settings.DATABASES`` alias pynenc stores its state in.
    :cvar ConfigField[int] django_transient_retries:
        How many times an operation is retried after a transient database error
        (SQLite "database is locked", lock-wait timeouts, deadlocks, serialization
        failures, a dropped connection outside a transaction) before it is raised.
    :cvar ConfigField[bool] django_listen_notify:
        On PostgreSQL, enqueueing sends ``NOTIFY`` and idle workers ``LISTEN``, so they
        wake at once instead of polling. Turn off behind a transaction-mode pooler
        (PgBouncer), which cannot carry ``LISTEN``; workers then back off instead. On
        SQLite (Linux), enqueues and final statuses touch signal files beside the
        database file, which idle workers and waiting clients watch with inotify; on
        MariaDB/MySQL the same files, in a private temporary directory, shorten the
        backoff's sleeps for what this host's processes enqueue and finish.
    :cvar ConfigField[bool] django_prepared_statements:
        On PostgreSQL (psycopg 3), the fixed SQL run several times per invocation is
        prepared on the server once per connection, sparing its parsing and planning.
        Turn off behind a transaction-mode pooler without prepared-statement support
        (PgBouncer before 1.21, or ``max_prepared_statements = 0``).
    :cvar ConfigField[bool] django_async_claim_commits:
        On PostgreSQL, a worker's claim (the queue pop and PENDING) and RUNNING commit
        without waiting for the WAL flush (``synchronous_commit`` off for those
        transactions only): a trivial invocation then waits for one disk flush, its final
        status, instead of three. Submissions, final statuses and results always wait
        for theirs. A database crash (not a restart) can forget a claim or a RUNNING from
        its last moments: the invocation is then queued or PENDING again, and runs again,
        as after a worker crash; nothing is lost. Set False to flush every commit.
    :cvar ConfigField[float] django_stuck_wait_after_sec:
        ``manage.py pynenc_status`` reports a stuck wait (and exits 1) once a running
        invocation has waited this long for one that no worker has taken for as long (on
        a queue no live runner consumes, held by concurrency control, ...) while its own
        worker runs nothing else. Keep it above the time work normally waits in a queue.
    """

    django_db_alias = ConfigField("default")
    django_transient_retries = ConfigField(8)
    django_listen_notify = ConfigField(True)
    django_prepared_statements = ConfigField(True)
    django_async_claim_commits = ConfigField(True)
    django_stuck_wait_after_sec = ConfigField(60.0)


class ConfigOrchestratorDjango(ConfigOrchestrator, ConfigDjango):
    """Orchestrator settings for :class:`~pynenc_django.orchestrator.DjangoOrchestrator`."""


class ConfigBrokerDjango(ConfigBroker, ConfigDjango):
    """Broker settings for :class:`~pynenc_django.broker.DjangoBroker`."""


class ConfigStateBackendDjango(ConfigStateBackend, ConfigDjango):
    """State backend settings for :class:`~pynenc_django.state_backend.DjangoStateBackend`."""


class ConfigTriggerDjango(ConfigTrigger, ConfigDjango):
    """Trigger settings for :class:`~pynenc_django.trigger.DjangoTrigger`.

    :cvar ConfigField[float] django_conditions_cache_sec:
        How long a process reuses the conditions that watch a task (looked up on every
        status change, result and failure of every invocation). A condition registered
        by another process applies there after at most this long; the registering
        process sees it at once. 0 looks them up every time.
    """

    django_conditions_cache_sec = ConfigField(1.0)


class ConfigClientDataStoreDjango(ConfigClientDataStore, ConfigDjango):
    """Client data store settings for :class:`~pynenc_django.client_data_store.DjangoClientDataStore`."""


class ConfigDjangoPersistentProcessRunner(ConfigPersistentProcessRunner, ConfigDjango):
    """Settings for :class:`~pynenc_django.runner.DjangoPersistentProcessRunner`.

    :cvar ConfigField[float] django_idle_wait_max_sec:
        Longest an idle worker waits before looking for work again when the database
        cannot notify it (SQLite, MariaDB/MySQL): it bounds the wake-up latency. A look
        costs two or three statements, so 1.0 keeps an idle worker under 5 per second.
    :cvar ConfigField[float] django_notify_safety_poll_sec:
        With LISTEN/NOTIFY (PostgreSQL) or signal files (SQLite), how often an idle
        worker polls anyway. Every enqueue notifies, so this only matters for work
        enqueued by a process that has ``django_listen_notify`` off.
    :cvar ConfigField[float] django_heartbeat_interval_sec:
        How often the runner refreshes its workers' heartbeats (a worker whose runner
        died refreshes its own while it finishes its invocation). It is also how often a
        runner looks for the invocations of lost runners (``django_runner_dead_after_sec``).
    :cvar ConfigField[float] django_runner_dead_after_sec:
        A worker of a ``DjangoPersistentProcessRunner`` whose heartbeat is older than this
        (or missing) is dead with its whole runner host: any live runner puts its PENDING,
        RUNNING and PAUSED invocations back in their queue (KILLED, then REROUTED), so they
        run again within this bound plus one heartbeat interval (35 s by default), instead
        of after pynenc's ``recover_running_invocations`` (cron ``*/15`` and
        ``runner_considered_dead_after_minutes``, 10). A runner looks only after it has
        itself reached the database without an error for this long (since its start or
        its last database error), so a database outage never makes live runners look
        dead. Must be at least three heartbeat intervals: a worker whose runner was killed
        beats on its own up to one interval after its runner's last beat. 0 turns the
        recovery off (pynenc's services remain). Every runner of one app should share it;
        hosts' clocks must agree to well within it (NTP).
    :cvar ConfigField[float] django_shutdown_grace_sec:
        On SIGTERM/SIGINT, how long running invocations may take to finish before they
        are interrupted and rerouted. 0 (pynenc's behaviour) reroutes them at once;
        set it below your orchestrator's kill timeout (Kubernetes: 30 s by default).
    :cvar ConfigField[float] django_reroute_timeout_sec:
        How long a worker keeps trying to reroute an invocation it could not finish
        because the database was unreachable. After that, pynenc's recovery services
        (which also need the database) take over.
    :cvar ConfigField[float] django_blocking_check_interval_sec:
        pynenc looks for invocations that others wait on before every claim, to run them
        first. A busy worker looks at most this often after finding none (they stay
        queued in order meanwhile); 0 looks before every claim.
    """

    django_idle_wait_max_sec = ConfigField(1.0)
    django_notify_safety_poll_sec = ConfigField(10.0)
    django_heartbeat_interval_sec = ConfigField(5.0)
    django_runner_dead_after_sec = ConfigField(30.0)
    django_shutdown_grace_sec = ConfigField(0.0)
    django_reroute_timeout_sec = ConfigField(300.0)
    django_blocking_check_interval_sec = ConfigField(0.1)

    def __init__(
        self, config_values: dict[str, Any] | None = None, config_filepath: str | None = None
    ) -> None:
        super().__init__(config_values=config_values, config_filepath=config_filepath)
        beat = float(self.django_heartbeat_interval_sec)
        dead_after = float(self.django_runner_dead_after_sec)
        if beat <= 0:
            raise ValueError(f"django_heartbeat_interval_sec must be > 0, not {beat:g}")
        if dead_after < 0 or 0 < dead_after < MIN_BEATS_BEFORE_DEAD * beat:
            raise ValueError(
                f"django_runner_dead_after_sec ({dead_after:g}) must be 0 (off) or at least "
                f"{MIN_BEATS_BEFORE_DEAD} heartbeat intervals "
                f"({MIN_BEATS_BEFORE_DEAD} x django_heartbeat_interval_sec = "
                f"{MIN_BEATS_BEFORE_DEAD * beat:g}s)"
            )
