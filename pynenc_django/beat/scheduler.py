"""The evaluator: django-celery-beat's ``PeriodicTask`` rows fired as pynenc invocations.

:func:`run_due_periodic_tasks` is called by the cluster-wide atomic service (the trigger
loop, about once a second, on one runner at a time). It reads every enabled periodic task
and computes its due times with django-celery-beat's own schedule classes (interval,
crontab with its timezone, solar, clocked), from ``last_run_at``.

**Exactly once per due time.** Each due time is handled in one transaction: a
compare-and-set of ``last_run_at`` (``UPDATE ... WHERE last_run_at = <the value read>``),
the pynenc invocation, ``total_run_count`` and a :class:`~.models.PeriodicTaskRun` whose
``dedupe_key`` is unique. A runner that loses the race updates nothing and fires nothing;
a crash before the commit leaves the due time due. The rows are the audit trail.

**Late policy** (the same as pynenc_django's cron ticks). A due time handled within
:data:`ON_TIME_WITHIN` (60 s) of it is on time and runs, each one: a dead runner's turn
is reaped well within that, so a 10 s interval loses no due time when a runner dies.
Due times older than that were missed (every runner down, the database unreachable):
they are coalesced into **one** ``late`` run, the newest of them, its ``missed`` counting
the others, logged at WARNING; never a burst of catch-up runs, never a silent skip.

**What else is honoured.** ``enabled`` (checked again in the compare-and-set), ``one_off``
(disabled by its run, as django-celery-beat does), ``start_time`` (no due time before it),
``expires`` (at that instant the task is disabled, as django-celery-beat does, with an
``expired`` row), ``expire_seconds`` (a due time handled later than that is not run: an
``expired`` row; pynenc has no message expiry, so it does not apply to the wait in the
queue), ``args``/``kwargs`` (JSON, as django-celery-beat parses them), ``queue`` and
``priority`` (the invocation is routed there; see :func:`_routed_task`). An unknown task,
bad JSON, arguments the function does not accept or a queue no runner knows are ``error``
rows, logged at ERROR with the periodic task's name, and the loop goes on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pynenc_django.beat.names import UnknownTaskError, resolve_task

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from django_celery_beat.models import PeriodicTask
    from pynenc import Pynenc
    from pynenc.arguments import Arguments
    from pynenc.task import Task

    from pynenc_django.beat.models import PeriodicTaskRun

logger = logging.getLogger("pynenc_django.beat")

#: A due time handled this long after it is on time; older ones were missed.
ON_TIME_WITHIN = timedelta(seconds=60)
#: Missed due times of a crontab or solar schedule are counted one by one up to this
#: many; beyond it the newest is found directly and ``missed`` is a lower bound.
MAX_COUNTED = 10_000
#: At most this many due times of one task are handled in one evaluation (the next
#: evaluation, a second later, goes on).
MAX_PER_EVALUATION = 100
#: pynenc's priority range is -100..100 (higher first); django-celery-beat allows 0..255.
MAX_PRIORITY = 100

_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class DueTime:
    """The due time to handle, and the earlier ones coalesced into it (not run)."""

    due_at: datetime
    missed: int = 0
    #: Handled more than :data:`ON_TIME_WITHIN` after it was due.
    late: bool = False
    #: The oldest of the missed due times.
    missed_since: datetime | None = None


# ---------------------------------------------------------------------------- entry points


def run_due_periodic_tasks(
    app: Pynenc, now: datetime, atomic_service_run_id: str | None = None
) -> int:
    """Fire the due times of every enabled periodic task; returns how many invocations
    were registered.

    Only the project's app (``settings.PYNENC``'s ``app_id``) evaluates the schedule:
    django-celery-beat's table has no app column, and another app sharing the database
    would record the project's tasks as unknown. A database error while reading the
    schedule propagates (the atomic service records it); one while handling a task is
    logged and that task is tried again at the next call.
    """
    return evaluate_periodic_tasks(app, now, atomic_service_run_id)[0]


def evaluate_periodic_tasks(
    app: Pynenc, now: datetime, atomic_service_run_id: str | None = None
) -> tuple[int, int]:
    """:func:`run_due_periodic_tasks`, and how many periodic tasks are enabled (none: the
    atomic services may skip idle turns)."""
    if now.tzinfo is None:
        raise ValueError(f"now must be an aware datetime, got naive {now.isoformat()}")
    if not _is_project_app(app):
        return 0, 0
    fired = 0
    enabled = _enabled_periodic_tasks()
    for periodic_task in enabled:
        try:
            fired += _evaluate(app, periodic_task, now, atomic_service_run_id)
        except Exception:
            logger.exception(
                "Periodic task %r (id %s, task %s): handling its due times failed; it is "
                "tried again at the next evaluation",
                periodic_task.name,
                periodic_task.pk,
                periodic_task.task,
            )
    return fired, len(enabled)


def run_now(
    app: Pynenc, periodic_task: PeriodicTask, now: datetime | None = None
) -> PeriodicTaskRun:
    """The admin's "Run selected tasks": one invocation now, outside the schedule
    (``last_run_at`` and ``total_run_count`` are the schedule's, as in django-celery-beat).
    The returned run has the invocation id, or ``reason == "error"`` and the error."""
    from pynenc_django.beat.models import PeriodicTaskRun, RunReason

    now = now or datetime.now(UTC)
    call = _prepare_call(app, periodic_task)
    invocation_id = None
    error = call if isinstance(call, str) else ""
    with _transaction(app):
        if isinstance(call, PreparedCall):
            invocation_id, error = _invoke_in_savepoint(app, call)
        run = PeriodicTaskRun.objects.using(_beat_alias()).create(
            **_run_fields(app, periodic_task, now, now, None),
            reason=RunReason.ERROR if error else RunReason.RUN_NOW,
            invocation_id=invocation_id,
            error=error,
            dedupe_key=f"{periodic_task.pk}@run-now@{uuid.uuid4().hex}",
        )
    if error:
        _log_error(periodic_task, error)
    return run


# ---------------------------------------------------------------------------- due times


def next_due(periodic_task: PeriodicTask, now: datetime) -> DueTime | None:
    """The due time to handle at ``now`` (the newest one since ``last_run_at``, the older
    ones counted in ``missed``), or ``None``. Reads only the row; raises what the schedule
    raises (a solar schedule without ``ephem``, a schedule row that was deleted)."""
    from celery import schedules
    from django_celery_beat.clockedschedule import clocked

    schedule = periodic_task.schedule
    if isinstance(schedule, schedules.schedule) and not schedule.relative:
        return _interval_due(periodic_task, schedule.run_every, now)
    next_after = _next_after(schedule, now)
    if isinstance(schedule, clocked):
        first = _clocked_due(periodic_task, schedule)
    else:
        first = _first_due(periodic_task, next_after, now, starts_at_start=False)
    if first is None or first > now:
        return None
    if now - first <= ON_TIME_WITHIN:
        return DueTime(first)
    # Missed (due more than ON_TIME_WITHIN ago): the newest of them runs in their place.
    missed_until = now - ON_TIME_WITHIN - _EPSILON
    newest, count = first, 1
    while (following := next_after(newest)) <= missed_until and following > newest:
        newest, count = following, count + 1
        if count >= MAX_COUNTED:
            newest = _latest_at_or_before(next_after, missed_until, newest)
            break
    return _due(newest, count - 1, first, now)


def _interval_due(periodic_task: PeriodicTask, every: timedelta, now: datetime) -> DueTime | None:
    """An interval's due times are ``first + k * every``: counted, not iterated."""
    if every <= timedelta(0):
        raise ValueError(f"the interval is {every}, not a positive duration")
    first = _first_due(periodic_task, lambda t: t + every, now, starts_at_start=True)
    if first > now:
        return None
    if now - first <= ON_TIME_WITHIN:
        return DueTime(first)
    missed = (now - ON_TIME_WITHIN - _EPSILON - first) // every
    return _due(first + missed * every, missed, first, now)


def _due(newest: datetime, missed: int, oldest: datetime, now: datetime) -> DueTime:
    return DueTime(
        newest,
        missed=missed,
        late=now - newest > ON_TIME_WITHIN,
        missed_since=oldest if missed else None,
    )


def _first_due(
    periodic_task: PeriodicTask,
    next_after: Callable[[datetime], datetime],
    now: datetime,
    starts_at_start: bool,
) -> datetime:
    """The first due time after ``last_run_at``; without one, the first after the row's
    last change (``date_changed``), as django-celery-beat's scheduler starts a schedule.
    Never before ``start_time``: an interval (``starts_at_start``) then runs at
    ``start_time`` itself (django-celery-beat runs it at its first check from then on),
    other schedules at their first time from it."""
    start = periodic_task.start_time
    if periodic_task.last_run_at is not None:
        first = next_after(periodic_task.last_run_at)
        if start is None or first >= start:
            return first
        anchor = start  # start_time was moved past the last run
    else:
        changed = periodic_task.date_changed or now
        if start is None:
            return next_after(changed)
        anchor = max(start, changed)
    return anchor if starts_at_start else next_after(anchor - _EPSILON)


def _clocked_due(periodic_task: PeriodicTask, schedule: Any) -> datetime | None:
    """A clocked schedule's one due time (not before ``start_time``), unless it ran."""
    due: datetime = schedule.clocked_time
    if periodic_task.start_time is not None and due < periodic_task.start_time:
        due = periodic_task.start_time
    last = periodic_task.last_run_at
    return None if last is not None and last >= due else due


def _next_after(schedule: Any, now: datetime) -> Callable[[datetime], datetime]:
    """``t -> the schedule's first due time after t``, from celery's own
    ``remaining_estimate`` with the schedule's clock pinned to ``now`` (crontabs count in
    their own timezone, daylight-saving changes included, as celery beat does)."""
    schedule.nowfun = lambda: now

    def next_after(t: datetime) -> datetime:
        return now + schedule.remaining_estimate(t)

    return next_after


def _latest_at_or_before(
    next_after: Callable[[datetime], datetime], limit: datetime, floor: datetime
) -> datetime:
    """The newest due time at or before ``limit`` (``floor`` is one): looking back from
    ``limit`` over a window that doubles until it holds one, so a minutely crontab
    missed for a year costs a few dozen steps, not half a million."""
    back = timedelta(minutes=1)
    while True:
        start = max(limit - back, floor)
        found = next_after(start)
        if start == floor or found <= limit:
            found = floor if found > limit else found
            while (following := next_after(found)) <= limit and following > found:
                found = following
            return found
        back *= 2


# ---------------------------------------------------------------------------- handling


def _evaluate(app: Pynenc, periodic_task: PeriodicTask, now: datetime, run_id: str | None) -> int:
    """Every due time of one task, oldest first (see the late policy)."""
    if periodic_task.expires is not None and now >= periodic_task.expires:
        _expire(app, periodic_task, now, run_id)
        return 0
    fired = 0
    for _ in range(MAX_PER_EVALUATION):
        try:
            due = next_due(periodic_task, now)
        except Exception as exc:
            _record_schedule_error(app, periodic_task, now, run_id, exc)
            return fired
        if due is None:
            return fired
        call = _prepare_call(app, periodic_task)
        handled = _handle_due(app, periodic_task, due, now, run_id, call)
        if handled is None:
            return fired  # another runner moved it first: its turn handles the rest
        fired += handled
        periodic_task.last_run_at = due.due_at
        if periodic_task.one_off and handled:
            return fired
    return fired


def _handle_due(
    app: Pynenc,
    periodic_task: PeriodicTask,
    due: DueTime,
    now: datetime,
    run_id: str | None,
    call: PreparedCall | str,
) -> int | None:
    """One due time in one transaction; how many invocations were registered (0 or 1),
    or ``None`` when it was not handled here (the compare-and-set found ``last_run_at``
    moved by another runner, or the due time on record already)."""
    from django.db.models import F
    from django_celery_beat.models import PeriodicTask

    from pynenc_django.beat.models import PeriodicTaskRun, RunReason

    alias = _beat_alias()
    late_by = (now - due.due_at).total_seconds()
    error = call if isinstance(call, str) else ""
    reason = RunReason.LATE if due.late else RunReason.SCHEDULE
    limit = periodic_task.expire_seconds
    if not error and limit is not None and late_by > limit:
        reason = RunReason.EXPIRED
        error = (
            f"due at {due.due_at.isoformat()} and handled {late_by:.1f}s later, over its "
            f"expire_seconds ({limit}): not run"
        )
    key = f"{periodic_task.pk}@{_utc_iso(due.due_at)}"
    invocation_id = None
    with _transaction(app):
        if not _unchanged(periodic_task).update(last_run_at=due.due_at):
            return None
        if PeriodicTaskRun.objects.using(alias).filter(dedupe_key=key).exists():
            # Its row exists: last_run_at was set back (by hand, or by a save of a form
            # loaded before that run). A due time is handled once: not run again.
            logger.warning(
                "Periodic task %r (id %s): due time %s was handled already (run %s), "
                "not run again; last_run_at is set to it",
                periodic_task.name,
                periodic_task.pk,
                due.due_at.isoformat(),
                key,
            )
            return None
        if isinstance(call, PreparedCall) and reason != RunReason.EXPIRED:
            invocation_id, error = _invoke_in_savepoint(app, call)
        if invocation_id:
            changes: dict[str, Any] = {"total_run_count": F("total_run_count") + 1}
            if periodic_task.one_off:
                changes["enabled"] = False  # as django-celery-beat does after the run
            PeriodicTask.objects.using(alias).filter(pk=periodic_task.pk).update(**changes)
        elif reason != RunReason.EXPIRED:
            reason = RunReason.ERROR
        PeriodicTaskRun.objects.using(alias).create(
            **_run_fields(app, periodic_task, due.due_at, now, run_id),
            late_by_sec=max(late_by, 0.0),
            missed=due.missed,
            reason=reason,
            invocation_id=invocation_id,
            error=error,
            dedupe_key=key,
        )
    _log_outcome(periodic_task, due, now, reason, invocation_id, error)
    return 1 if invocation_id else 0


def _expire(app: Pynenc, periodic_task: PeriodicTask, now: datetime, run_id: str | None) -> None:
    """``expires`` has passed: disable the task (as django-celery-beat does) and record
    it once, with the due times that were not run."""

    from pynenc_django.beat.models import PeriodicTaskRun, RunReason

    expires = periodic_task.expires
    assert expires is not None
    try:
        due = next_due(periodic_task, now)
    except Exception:
        due = None
    pending = due.missed + 1 if due else 0
    alias = _beat_alias()
    key = f"{periodic_task.pk}@{_utc_iso(expires)}"
    error = (
        f"expired at {expires.isoformat()} (PeriodicTask.expires): disabled, as "
        f"django-celery-beat does; {pending} due time(s) not run"
    )
    with _transaction(app):
        if not _unchanged(periodic_task).update(enabled=False):
            return
        if PeriodicTaskRun.objects.using(alias).filter(dedupe_key=key).exists():
            logger.warning(
                "Periodic task %r (id %s) was enabled again after it expired at %s: "
                "disabled again (clear or move its expires to run it)",
                periodic_task.name,
                periodic_task.pk,
                expires.isoformat(),
            )
            return
        PeriodicTaskRun.objects.using(alias).create(
            **_run_fields(app, periodic_task, expires, now, run_id),
            late_by_sec=max((now - expires).total_seconds(), 0.0),
            missed=pending,
            reason=RunReason.EXPIRED,
            error=error,
            dedupe_key=key,
        )
    logger.warning("Periodic task %r (id %s): %s", periodic_task.name, periodic_task.pk, error)


def _record_schedule_error(
    app: Pynenc, periodic_task: PeriodicTask, now: datetime, run_id: str | None, exc: Exception
) -> None:
    """A schedule that cannot be computed (a solar one without ``ephem``): one ``error``
    row and one ERROR log per version of the row (``date_changed``), not one a second."""
    from django.db import IntegrityError

    from pynenc_django.beat.models import PeriodicTaskRun, RunReason

    changed = periodic_task.date_changed or now
    key = f"{periodic_task.pk}@schedule@{_utc_iso(changed)}"
    alias = _beat_alias()
    if PeriodicTaskRun.objects.using(alias).filter(dedupe_key=key).exists():
        return
    error = f"its schedule cannot be computed: {type(exc).__name__}: {exc}"
    try:
        with _transaction(app):
            PeriodicTaskRun.objects.using(alias).create(
                **_run_fields(app, periodic_task, now, now, run_id),
                reason=RunReason.ERROR,
                error=error,
                dedupe_key=key,
            )
    except IntegrityError:
        return  # recorded by a racing evaluator
    _log_error(periodic_task, error)


# ---------------------------------------------------------------------------- the call


@dataclass(frozen=True)
class PreparedCall:
    """A periodic task's pynenc task (routed to its queue and priority) and arguments."""

    task: Task[Any, Any]
    arguments: Arguments

    def invoke(self, app: Pynenc) -> str:
        """Register the invocation as pynenc's trigger does (``BaseTrigger.execute_task``):
        ``task._call``, outside any parent invocation or event context."""
        from pynenc import context

        previous_invocation = context.swap_dist_invocation_context(app.app_id, None)
        previous_event = context.swap_trigger_event_context(app.app_id, None)
        try:
            return str(self.task._call(self.arguments).invocation_id)
        finally:
            context.swap_trigger_event_context(app.app_id, previous_event)
            context.swap_dist_invocation_context(app.app_id, previous_invocation)


def _prepare_call(app: Pynenc, periodic_task: PeriodicTask) -> PreparedCall | str:
    """The call for ``periodic_task``, or why it cannot be made (the error text)."""
    from kombu.utils.json import loads  # django-celery-beat's own parser
    from pynenc.arguments import Arguments

    try:
        task = resolve_task(app, periodic_task.task)
    except UnknownTaskError as exc:
        return str(exc)
    try:
        args = loads(periodic_task.args or "[]")
        kwargs = loads(periodic_task.kwargs or "{}")
    except ValueError as exc:
        return f"args/kwargs are not valid JSON ({exc}): args={periodic_task.args!r}, kwargs={periodic_task.kwargs!r}"
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return (
            f"args must be a JSON list and kwargs a JSON object, got args={periodic_task.args!r}, "
            f"kwargs={periodic_task.kwargs!r}"
        )
    try:
        arguments = Arguments.from_call(task.func, *args, **kwargs)
    except TypeError as exc:
        return f"{task.task_id.key} does not take args={args!r}, kwargs={kwargs!r}: {exc}"
    routed = _routed_task(app, task, periodic_task)
    if isinstance(routed, str):
        return routed
    return PreparedCall(routed, arguments)


def known_queues(app: Pynenc) -> list[str]:
    """Queues an invocation may be routed to: the broker's (``PYNENC["queues"]``) and
    those registered tasks declare, as ``pynenc_runner --queues`` accepts."""
    from pynenc_django.project import declared_queues

    queues = list(app.broker.conf.queues)
    return queues + [q for q in declared_queues(app) if q not in queues]


def _routed_task(
    app: Pynenc, task: Task[Any, Any], periodic_task: PeriodicTask
) -> Task[Any, Any] | str:
    """``task``, or a copy of it routed to the periodic task's ``queue`` and ``priority``.

    pynenc 0.4 routes by the task object's options, so a copy with other options (what
    ``Task.create_for_app`` builds, as the Django Tasks backend does) sends this one
    invocation elsewhere. Only its first routing: pynenc rebuilds a task from its id,
    so a rerouted invocation (a worker crash) goes back to the task's own queue and
    priority; ``manage.py check`` warns of such queues (``pynenc_django_beat.W003``).
    """
    from pynenc.task import Task

    options = dict(task.options)
    queue = (periodic_task.queue or "").strip()
    if queue:
        queues = known_queues(app)
        if queue not in queues:
            return (
                f"queue {queue!r} is not one of pynenc's queues ({', '.join(queues)}): add it "
                "to PYNENC['queues'], or clear the periodic task's queue"
            )
        options["queue"] = queue
    if periodic_task.priority is not None:
        options["priority"] = float(min(periodic_task.priority, MAX_PRIORITY))
    conf = task.conf
    if options.get("queue", conf.queue) == conf.queue and options.get(
        "priority", conf.priority
    ) == float(conf.priority):
        return task
    return Task.create_for_app(app, task.func, options)


def _invoke_in_savepoint(app: Pynenc, call: PreparedCall) -> tuple[str | None, str]:
    """(invocation id, "") or (None, the error): a failure of the call itself (an
    argument pynenc cannot store) is recorded; a database error aborts the transaction."""
    from django.db import DatabaseError, transaction

    try:
        with transaction.atomic(using=_pynenc_alias(app)):
            return call.invoke(app), ""
    except DatabaseError:
        raise
    except Exception as exc:
        return None, f"registering the invocation raised {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------- helpers


def _is_project_app(app: Pynenc) -> bool:
    from pynenc_django.project import PynencSettingsError, config_values

    try:
        return bool(app.app_id == config_values()["app_id"])
    except PynencSettingsError:
        return False


def _enabled_periodic_tasks() -> list[PeriodicTask]:
    from django_celery_beat.models import PeriodicTask

    # From the database the compare-and-set writes to: a replica's stale last_run_at
    # would only lose every race.
    return list(
        PeriodicTask.objects.using(_beat_alias())
        .filter(enabled=True)
        .select_related("interval", "crontab", "solar", "clocked")
        .order_by("pk")
    )


def _unchanged(periodic_task: PeriodicTask) -> QuerySet[PeriodicTask]:
    """The compare-and-set's rows: this task, still enabled, ``last_run_at`` as read."""
    from django_celery_beat.models import PeriodicTask

    rows = PeriodicTask.objects.using(_beat_alias()).filter(pk=periodic_task.pk, enabled=True)
    last = periodic_task.last_run_at
    return rows.filter(last_run_at=last) if last is not None else rows.filter(last_run_at=None)


def _beat_alias() -> str:
    """The database of django-celery-beat's rows (and ours, which reference them)."""
    from django.db import router
    from django_celery_beat.models import PeriodicTask

    return router.db_for_write(PeriodicTask) or "default"


def _pynenc_alias(app: Pynenc) -> str:
    alias = getattr(app.orchestrator, "db_alias", None)
    return str(alias) if alias else _beat_alias()


@contextmanager
def _transaction(app: Pynenc) -> Iterator[None]:
    """One transaction for the schedule's rows and the invocation's.

    When pynenc's tables live in another database (``PYNENC["db_alias"]``), its
    transaction is nested in the schedule's and commits just before it: a crash between
    the two commits leaves the due time due with its invocation registered, so it runs
    again (at least once, as pynenc delivers), never lost.
    """
    from django.db import transaction

    from pynenc_django.db.transactions import write_transaction

    beat, pynenc = _beat_alias(), _pynenc_alias(app)
    with write_transaction(beat):
        if pynenc == beat:
            yield
        else:
            with transaction.atomic(using=pynenc):
                yield


def _run_fields(
    app: Pynenc, periodic_task: PeriodicTask, due_at: datetime, now: datetime, run_id: str | None
) -> dict[str, Any]:
    return {
        "app_id": app.app_id,
        "periodic_task_id": periodic_task.pk,
        "periodic_task_name": periodic_task.name,
        "task_name": periodic_task.task,
        "due_at": due_at,
        "fired_at": now,
        "atomic_service_run_id": run_id,
    }


def _utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _log_error(periodic_task: PeriodicTask, error: str) -> None:
    logger.error(
        "Periodic task %r (id %s, task %s) not run: %s",
        periodic_task.name,
        periodic_task.pk,
        periodic_task.task,
        error,
    )


def _log_outcome(
    periodic_task: PeriodicTask,
    due: DueTime,
    now: datetime,
    reason: str,
    invocation_id: str | None,
    error: str,
) -> None:
    from pynenc_django.beat.models import RunReason

    name, pk = periodic_task.name, periodic_task.pk
    if reason == RunReason.ERROR:
        _log_error(periodic_task, error)
    elif reason == RunReason.EXPIRED:
        logger.warning("Periodic task %r (id %s): %s", name, pk, error)
    invocation = f", invocation {invocation_id}" if invocation_id else ""
    late_by = (now - due.due_at).total_seconds()
    outage = due.missed_since is not None and now - due.missed_since > ON_TIME_WITHIN
    if due.late or outage:
        logger.warning(
            "Periodic task %r (id %s): due at %s, handled %.1fs late; %s%s earlier due time(s) "
            "missed since %s (no runner evaluated the schedule) and coalesced into it%s",
            name,
            pk,
            due.due_at.isoformat(),
            late_by,
            "at least " if due.missed >= MAX_COUNTED - 1 else "",
            due.missed,
            (due.missed_since or due.due_at).isoformat(),
            invocation,
        )
    elif due.missed:  # an interval shorter than the time between two evaluations
        logger.info(
            "Periodic task %r (id %s): due at %s%s; %s earlier due time(s) since %s coalesced "
            "into it (its interval is shorter than the time between evaluations)",
            name,
            pk,
            due.due_at.isoformat(),
            invocation,
            due.missed,
            (due.missed_since or due.due_at).isoformat(),
        )
    elif invocation_id:
        logger.info(
            "Periodic task %r (id %s): due at %s%s", name, pk, due.due_at.isoformat(), invocation
        )
