"""pynenc configuration classes for the Django backends.

Every setting goes through pynenc's own config system (cistell), so it can be given to
``PynencBuilder().django(db_alias=...)``, ``Pynenc(config_values=...)``, a pynenc config
file, or environment variables such as ``PYNENC__DJANGO_DB_ALIAS``.

The rules a value must follow beyond its type (:data:`BOUNDS`, :func:`setting_problems`)
live here too, so ``manage.py check`` and the runner refuse the same values.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cistell import ConfigField
from cistell.root import ConfigRoot
from pynenc.conf.config_base import ConfigPynencBase
from pynenc.conf.config_broker import ConfigBroker, validate_queue_name
from pynenc.conf.config_client_data_store import ConfigClientDataStore
from pynenc.conf.config_orchestrator import ConfigOrchestrator
from pynenc.conf.config_runner import ConfigPersistentProcessRunner
from pynenc.conf.config_state_backend import ConfigStateBackend
from pynenc.conf.config_trigger import ConfigTrigger

#: ``django_runner_dead_after_sec`` spans at least this many heartbeat intervals.
MIN_BEATS_BEFORE_DEAD = 3

#: Where a settings problem comes from when it is not an environment variable.
SETTINGS = "settings.PYNENC"
ENV_PREFIX = "PYNENC__"


class PynencSettingsError(ValueError):
    """``settings.PYNENC`` (or a ``PYNENC__*`` environment variable) cannot be used."""


@dataclass(frozen=True)
class Bound:
    """The range a numeric setting accepts."""

    low: float = 0.0
    low_inclusive: bool = True
    high: float | None = None

    def refuses(self, number: float) -> str | None:
        """Why ``number`` is out of range, or ``None``."""
        if number < self.low or (number == self.low and not self.low_inclusive):
            return f"must be {'at least' if self.low_inclusive else 'greater than'} {self.low:g}"
        if self.high is not None and number > self.high:
            return f"must be at most {self.high:g}"
        return None


_POSITIVE = Bound(0.0, low_inclusive=False)

#: Numeric settings with a range of their own. Every other numeric setting is a duration,
#: interval, timeout, count or size, so it must not be negative (:data:`NON_NEGATIVE`).
#: Only values that are given are checked: pynenc's default 0 for ``num_processes`` and
#: ``max_processes`` means "the CPU count", which leaving the key out says.
BOUNDS: dict[str, Bound] = {
    "num_processes": Bound(1),
    "max_processes": Bound(1),
    "max_events_batch_size": Bound(1),
    "parallel_batch_size": Bound(1),
    # A zero interval would be a busy loop, a zero age an instant verdict.
    "django_heartbeat_interval_sec": _POSITIVE,
    "django_idle_wait_max_sec": _POSITIVE,
    "django_result_listen_idle_sec": _POSITIVE,
    "django_notify_safety_poll_sec": _POSITIVE,
    "django_stuck_wait_after_sec": _POSITIVE,
    "runner_considered_dead_after_minutes": _POSITIVE,
    "max_pending_seconds": _POSITIVE,
    "atomic_service_interval_minutes": _POSITIVE,
    "atomic_service_check_interval_minutes": _POSITIVE,
    "scheduler_interval_seconds": _POSITIVE,
    "atomic_service_max_start_slot_fraction": Bound(0.0, low_inclusive=False, high=1.0),
}
NON_NEGATIVE = Bound(0.0)
#: Numeric settings that may be negative (pynenc checks their range itself).
SIGNED = frozenset({"priority"})


#: Kinds of :class:`SettingProblem` (each is a system check id of its own).
WRONG_TYPE, OUT_OF_RANGE, BAD_QUEUES = "type", "range", "queues"


@dataclass(frozen=True)
class SettingProblem:
    """One unusable value: where it was given, its key, the value and why."""

    source: str  # SETTINGS, or the environment variable's name
    key: str
    value: Any
    reason: str
    kind: str = WRONG_TYPE
    secret: bool = False
    #: Where ``key`` sits inside ``settings.PYNENC``: ``("task", "orders.tasks.*")`` for
    #: a per-task option; empty for a top-level key.
    section: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        if self.source != SETTINGS:
            return self.source
        return SETTINGS + "".join(f"[{part!r}]" for part in (*self.section, self.key))

    def __str__(self) -> str:
        shown = "(secret)" if self.secret else _short_repr(self.value)
        return f"{self.where} is {shown}: {self.reason}"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_fields() -> dict[str, list[ConfigField[Any]]]:
    """Every pynenc setting (ours and plugins' included), by name: the fields that read it
    (``queues`` is read by the broker and by runners, with different rules)."""
    from pynenc.conf.config_base import ConfigPynencBase
    from pynenc.plugin_loader import load_all_plugins
    from pynenc.util.subclasses import get_all_subclasses

    load_all_plugins()
    found: dict[str, list[ConfigField[Any]]] = {}
    classes: list[type[ConfigPynencBase]] = [
        ConfigPynencBase,
        *get_all_subclasses(ConfigPynencBase),
    ]
    for cls in classes:
        for klass in cls.__mro__:
            for name, field in vars(klass).items():
                if isinstance(field, ConfigField) and all(
                    field is not known for known in found.get(name, [])
                ):
                    found.setdefault(name, []).append(field)
    return found


def bound_problem(name: str, value: Any) -> str | None:
    """Why a parsed numeric ``value`` of setting ``name`` is out of range, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or name in SIGNED:
        return None
    return BOUNDS.get(name, NON_NEGATIVE).refuses(value)


def _queues_problem(value: Any) -> str | None:
    """``PYNENC["queues"]`` is a list or tuple of names, never a string: ``"a,b"`` would be
    read by pynenc as two queues, ``"emails"`` as one, and a typo as neither."""
    if isinstance(value, str):
        return f"must be a list of queue names, not a string (write {value.split(',')!r})"
    if not isinstance(value, list | tuple):
        return f"must be a list or tuple of queue names, not {type(value).__name__}"
    if not value:
        return "must name at least one queue (leave it out for just 'default')"
    bad = [name for name in value if not isinstance(name, str) or not _valid_queue(name)]
    if bad:
        return (
            f"has invalid queue name(s) {', '.join(map(repr, bad))}: "
            "names are non-empty and use only letters, digits, '_', '.' and '-'"
        )
    repeated = sorted({name for name in value if value.count(name) > 1})
    if repeated:
        return f"repeats {', '.join(map(repr, repeated))}"
    return None


def _valid_queue(name: str) -> bool:
    try:
        validate_queue_name(name)
    except Exception:  # pynenc's ConfigError
        return False
    return True


def _value_problem(
    name: str, value: Any, fields: list[ConfigField[Any]], source: str
) -> tuple[str, str] | None:
    """``(kind, reason)`` when setting ``name`` cannot take ``value``."""
    if name == "queues" and source == SETTINGS and (reason := _queues_problem(value)):
        return BAD_QUEUES, reason
    for field in fields:
        try:
            parsed = field._mapper(value, type(field._default_value))
        except Exception as exc:  # cistell and pynenc raise assorted types for bad values
            return (BAD_QUEUES if name == "queues" else WRONG_TYPE), str(exc) or repr(exc)
        if reason := bound_problem(name, parsed):
            return OUT_OF_RANGE, reason
    return None


#: Keys of ``settings.PYNENC`` that configure the integration, with the rule for each.
INTEGRATION_RULES: dict[str, tuple[type, str]] = {
    "db_alias": (str, "must be the name of a DATABASES entry (a non-empty string)"),
    "autodiscover": (bool, "must be True or False"),
    "tasks_module": (str, "must be a module name such as 'tasks' (a non-empty string)"),
}


def setting_problems(
    user: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> list[SettingProblem]:
    """Every unusable value in ``settings.PYNENC`` and in pynenc's ``PYNENC__<NAME>``
    environment variables, each named (unknown keys are not this function's business)."""
    fields = config_fields()
    problems: list[SettingProblem] = []
    for key, value in (user or {}).items():
        if key in INTEGRATION_RULES:
            kind, rule = INTEGRATION_RULES[key]
            if not isinstance(value, kind) or value == "":
                problems.append(SettingProblem(SETTINGS, key, value, rule))
            continue
        name = str(key)
        if name in fields and (found := _value_problem(name, value, fields[name], SETTINGS)):
            secret = any(field._secret for field in fields[name])
            problems.append(SettingProblem(SETTINGS, name, value, found[1], found[0], secret))
    problems.extend(task_option_problems(user))
    for variable, value in sorted((os.environ if environ is None else environ).items()):
        if not variable.startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :].rsplit("__", 1)[-1].lower()
        if name in fields and (found := _value_problem(name, value, fields[name], variable)):
            secret = any(field._secret for field in fields[name])
            problems.append(SettingProblem(variable, name, value, found[1], found[0], secret))
    return problems


def config_bound_problems(config: ConfigRoot) -> list[str]:
    """Out-of-range values a built config holds, for the values that were given (from
    ``config_values``, a file or the environment), never pynenc's defaults."""
    found = []
    for name in sorted(config._provenance):
        value = getattr(config, name, None)
        if reason := bound_problem(name, value):
            found.append(f"{name} is {value!r}: {reason}")
    return found


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
    :cvar ConfigField[str] django_runner_name:
        What this process's runner is called (``manage.py pynenc_runner --name``): stored
        with its heartbeat and its workers', and shown with host and pid in the admin.
        ``""``: unnamed, the admin shows the runner's id. Per process: set it with
        ``--name`` or ``PYNENC__DJANGO_RUNNER_NAME`` (say, a pod name), not in ``PYNENC``.
    """

    django_db_alias = ConfigField("default")
    django_transient_retries = ConfigField(8)
    django_listen_notify = ConfigField(True)
    django_prepared_statements = ConfigField(True)
    django_async_claim_commits = ConfigField(True)
    django_stuck_wait_after_sec = ConfigField(60.0)
    django_runner_name = ConfigField("")

    def __init__(
        self, config_values: dict[str, Any] | None = None, config_filepath: str | None = None
    ) -> None:
        super().__init__(config_values=config_values, config_filepath=config_filepath)
        self._validate()

    def _validate(self) -> None:
        """The backends and the runner refuse what ``manage.py check`` reports (BOUNDS)."""
        if problems := config_bound_problems(self):
            raise PynencSettingsError("; ".join(problems))


class ConfigOrchestratorDjango(ConfigOrchestrator, ConfigDjango):
    """Orchestrator settings for :class:`~pynenc_django.orchestrator.DjangoOrchestrator`."""


class ConfigBrokerDjango(ConfigBroker, ConfigDjango):
    """Broker settings for :class:`~pynenc_django.broker.DjangoBroker`."""


class ConfigStateBackendDjango(ConfigStateBackend, ConfigDjango):
    """State backend settings for :class:`~pynenc_django.state_backend.DjangoStateBackend`."""


class ConfigTriggerDjango(ConfigTrigger, ConfigDjango):
    """Trigger settings for :class:`~pynenc_django.trigger.DjangoTrigger`.

    :cvar ConfigField[float] django_conditions_cache_sec:
        How long a process reuses the conditions that watch its tasks (looked up on every
        status change, result and failure of every invocation; one query per period
        answers every task and context). A condition registered
        by another process applies there after at most this long; the registering
        process sees it at once. 0 looks them up every time.
    """

    django_conditions_cache_sec = ConfigField(1.0)


class ConfigRetryDjango(ConfigPynencBase):
    """Retry backoff: how long a retried invocation waits before it runs again.

    pynenc retries an invocation that raised one of its task's ``retry_for`` exceptions up
    to ``max_retries`` times, at once. With a backoff, the retry is a delayed invocation
    (the broker's delayed messages): attempt *n* (from 0) waits ``retry_backoff * 2**n``
    seconds, at most ``retry_backoff_max``, and with ``retry_jitter`` a random time between
    0 and that (Celery's "full jitter", so many failing invocations do not retry in step).
    Per task, in pynenc's ``task`` section, by task key or ``fnmatch`` pattern::

        PYNENC = {"task": {"orders.tasks.charge_card": {"max_retries": 5, "retry_backoff": 2},
                           "orders.tasks.*": {"retry_backoff_max": 60}}}

    The retries run on ``pynenc_runner``'s workers, which move due invocations to their
    queue; pynenc's own runners see them at most about a second late.

    :cvar ConfigField[float] retry_backoff:
        Seconds of the first retry's wait; 0 (the default, pynenc's behaviour) retries at once.
    :cvar ConfigField[float] retry_backoff_max:
        Longest wait between two attempts, in seconds.
    :cvar ConfigField[bool] retry_jitter:
        Wait a random time up to the backoff instead of the backoff itself.
    """

    retry_backoff = ConfigField(0.0)
    retry_backoff_max = ConfigField(600.0)
    retry_jitter = ConfigField(True)


#: The fields of :class:`ConfigRetryDjango`, which a task's entry in ``task`` may set.
RETRY_FIELDS = ("retry_backoff", "retry_backoff_max", "retry_jitter")


class ConfigTaskDjango(ConfigRetryDjango):
    """pynenc-django's per-task options: the retry backoff (:class:`ConfigRetryDjango`)
    and time limits, for every task or per task in pynenc's ``task`` section, by task
    key or ``fnmatch`` pattern (:func:`task_settings`)::

        PYNENC = {"task": {"reports.tasks.*": {"soft_time_limit": 50, "time_limit": 60}}}

    Time limits are enforced by ``pynenc_runner``'s workers and their runner
    (:class:`~pynenc_django.runner.DjangoPersistentProcessRunner`); other runners ignore
    them.

    :cvar ConfigField[float] time_limit:
        Seconds an invocation may run (from its start on a worker) before its runner
        kills the worker and records it FAILED with ``TimeLimitExceededError``; it does
        not run again and the worker is replaced. Checked every runner loop iteration
        (``runner_loop_sleep_time_sec``). 0: no limit.
    :cvar ConfigField[float] soft_time_limit:
        Seconds after which ``SoftTimeLimitExceeded`` is raised inside the task (an
        ``Exception`` it may catch to clean up), before ``time_limit``. Only for a sync
        task run as the worker's outermost invocation: one run inside another's wait
        has none (its hard limit still holds), and the outer one's is raised once the
        inner run returns to it. 0: no limit.
    """

    time_limit = ConfigField(0.0)
    soft_time_limit = ConfigField(0.0)


#: The time-limit fields of :class:`ConfigTaskDjango`.
LIMIT_FIELDS = ("time_limit", "soft_time_limit")
#: Every field a task's entry in the ``task`` section may set for pynenc-django.
TASK_FIELDS = (*RETRY_FIELDS, *LIMIT_FIELDS)


def _task_fields() -> dict[str, list[ConfigField[Any]]]:
    """The config fields of :data:`TASK_FIELDS`, as :func:`config_fields` lists them."""
    found: dict[str, list[ConfigField[Any]]] = {}
    for klass in ConfigTaskDjango.__mro__:
        for name, field in vars(klass).items():
            if name in TASK_FIELDS and isinstance(field, ConfigField):
                found.setdefault(name, [field])
    return found


def task_option_problems(values: Mapping[str, Any] | None) -> list[SettingProblem]:
    """Unusable values of pynenc-django's options (:data:`TASK_FIELDS`) in the entries
    of the ``task`` section, each named with its task key or pattern (pynenc reads the
    section without checking them)."""
    section = (values or {}).get("task")
    if not isinstance(section, Mapping):
        return []
    fields = _task_fields()
    problems = []
    for pattern, entry in section.items():
        if not isinstance(entry, Mapping):
            continue
        for name in TASK_FIELDS:
            if name not in entry:
                continue
            if found := _value_problem(name, entry[name], fields[name], SETTINGS):
                problems.append(
                    SettingProblem(
                        SETTINGS,
                        name,
                        entry[name],
                        found[1],
                        found[0],
                        section=("task", str(pattern)),
                    )
                )
    return problems


def task_settings(config_values: Mapping[str, Any] | None, task_key: str) -> ConfigTaskDjango:
    """The options of task ``task_key`` (retry backoff, time limits): the app's values,
    then the ``task`` section's patterns that match the key, in order, then its exact
    entry. The one reader of these options.

    :raises PynencSettingsError: naming each unusable value (``manage.py check`` reports
        the same, as ``pynenc_django.E007``/``E008``).
    """
    values = dict(config_values or {})
    if problems := task_option_problems(values):
        raise PynencSettingsError("; ".join(str(problem) for problem in problems))
    section = values.get("task")
    if isinstance(section, Mapping):
        matches = [
            entry
            for pattern, entry in section.items()
            if isinstance(entry, Mapping)
            and pattern != task_key
            and fnmatch.fnmatchcase(task_key, str(pattern))
        ]
        if isinstance(section.get(task_key), Mapping):
            matches.append(section[task_key])
        for entry in matches:
            values.update({k: v for k, v in entry.items() if k in TASK_FIELDS})
    config = ConfigTaskDjango(config_values=values)
    if problems_left := config_bound_problems(config):  # top-level values, environment
        raise PynencSettingsError("; ".join(problems_left))
    return config


#: The first slice's name for :func:`task_settings` (the retry backoff is part of it).
retry_settings = task_settings


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
    :cvar ConfigField[float] django_atomic_service_every_sec:
        How often the cluster runs pynenc's atomic services (trigger processing: cron
        ticks, events, status triggers), in whichever runner asks first once it is due;
        never two at once. A run whose runner's heartbeat is older than
        ``django_runner_dead_after_sec`` is over and the next starts at once. Each runner
        asks this often (one read), so the cost grows with runners, not with schedules.
        0 keeps pynenc's slots: ``atomic_service_interval_minutes`` (5) split among the
        runners, where a cron tick outside the slot of the runner evaluating it waits
        and an event waits minutes.
    :cvar ConfigField[float] django_atomic_service_idle_sec:
        After a turn that found nothing to do (no valid conditions, no
        django-celery-beat schedules), the runner skips its turns until the next cron
        tick it knows of, for at most this long; an announced event or watched status
        starts a turn at once. Bounds how late work nobody announced is seen (an event
        emitted on another host with MariaDB, a cron trigger registered elsewhere).
        At or below ``django_atomic_service_every_sec``: a turn every interval.
    :cvar ConfigField[float] django_result_listen_idle_sec:
        On PostgreSQL, a process that waited for a result (``invocation.result`` in a
        view, a script) keeps its ``LISTEN`` connection this long after its last wait,
        then closes it; its next wait subscribes again. An open subscription nobody
        reads holds PostgreSQL's notification queue: the server keeps every ``NOTIFY``
        of the cluster until each listener has read it, and a full queue fails every
        ``NOTIFY``, that is every submit.
    """

    django_idle_wait_max_sec = ConfigField(1.0)
    django_notify_safety_poll_sec = ConfigField(10.0)
    django_heartbeat_interval_sec = ConfigField(5.0)
    django_runner_dead_after_sec = ConfigField(30.0)
    django_shutdown_grace_sec = ConfigField(0.0)
    django_reroute_timeout_sec = ConfigField(300.0)
    django_blocking_check_interval_sec = ConfigField(0.1)
    django_atomic_service_every_sec = ConfigField(1.0)
    django_atomic_service_idle_sec = ConfigField(5.0)
    django_result_listen_idle_sec = ConfigField(30.0)

    def _validate(self) -> None:
        beat = float(self.django_heartbeat_interval_sec)
        dead_after = float(self.django_runner_dead_after_sec)
        if beat <= 0:
            raise PynencSettingsError(f"django_heartbeat_interval_sec must be > 0, not {beat:g}")
        if dead_after < 0 or 0 < dead_after < MIN_BEATS_BEFORE_DEAD * beat:
            raise PynencSettingsError(
                f"django_runner_dead_after_sec ({dead_after:g}) must be 0 (off) or at least "
                f"{MIN_BEATS_BEFORE_DEAD} heartbeat intervals "
                f"({MIN_BEATS_BEFORE_DEAD} x django_heartbeat_interval_sec = "
                f"{MIN_BEATS_BEFORE_DEAD * beat:g}s)"
            )
        super()._validate()


#: However often the atomic services run, a run is expected to complete at least this often.
MIN_ATOMIC_SERVICE_PERIOD = timedelta(minutes=1)


def atomic_service_period(
    config_values: dict[str, Any] | None, config_filepath: str | None = None
) -> timedelta:
    """How often the cluster's atomic services are expected to run, for the health checks
    (``pynenc_status``, the admin): ``django_atomic_service_every_sec``, but at least
    :data:`MIN_ATOMIC_SERVICE_PERIOD`, or pynenc's cycle where that is 0 (its slots)."""
    runner = ConfigDjangoPersistentProcessRunner(
        config_values=config_values, config_filepath=config_filepath
    )
    every = float(runner.django_atomic_service_every_sec)
    if every > 0:
        return max(timedelta(seconds=every), MIN_ATOMIC_SERVICE_PERIOD)
    from pynenc.conf.config_pynenc import ConfigPynenc

    pynenc = ConfigPynenc(config_values=config_values, config_filepath=config_filepath)
    return timedelta(minutes=float(pynenc.atomic_service_interval_minutes))
