"""System checks for the periodic tasks pynenc runs (``manage.py check``).

==============================  ========================================================
``pynenc_django_beat.W001``     An enabled periodic task names a task pynenc does not
                                know: every due time would be an ``error`` run.
``pynenc_django_beat.W002``     Its ``queue`` is not one of pynenc's queues: every due
                                time would be an ``error`` run.
``pynenc_django_beat.W003``     Its ``queue`` differs from the task's own: the first
                                routing honours it, a rerouted invocation (a worker
                                crash) goes back to the task's own queue.
``pynenc_django_beat.W004``     Its ``priority`` is over pynenc's 100: 100 is used.
``pynenc_django_beat.W005``     It sets ``exchange``, ``routing_key`` or ``headers``:
                                AMQP options pynenc does not use.
``pynenc_django_beat.W006``     Its schedule cannot be computed (a solar schedule
                                without the ``ephem`` package).
==============================  ========================================================

The rows are read from the database: before ``migrate`` (or without a reachable
database) there is nothing to check and nothing is reported.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Warning, register

if TYPE_CHECKING:
    from django_celery_beat.models import PeriodicTask
    from pynenc import Pynenc


@register()
def check_periodic_tasks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django.db import DatabaseError
    from django_celery_beat.models import PeriodicTask

    from pynenc_django.project import PynencSettingsError, get_app, settings_problems

    try:
        if settings_problems():
            return []  # pynenc_django.E0xx say what; tasks modules were not imported
        app = get_app()
        periodic_tasks = list(
            PeriodicTask.objects.filter(enabled=True)
            .select_related("interval", "crontab", "solar", "clocked")
            .order_by("name")
        )
    except (PynencSettingsError, DatabaseError):
        return []
    messages: list[CheckMessage] = []
    for periodic_task in periodic_tasks:
        messages.extend(_check_one(app, periodic_task))
    return messages


def _check_one(app: Pynenc, periodic_task: PeriodicTask) -> list[CheckMessage]:
    from pynenc_django.beat.names import UnknownTaskError, resolve_task
    from pynenc_django.beat.scheduler import MAX_PRIORITY, known_queues

    label = f"Periodic task {periodic_task.name!r} (id {periodic_task.pk})"
    found: list[CheckMessage] = []
    task = None
    try:
        task = resolve_task(app, periodic_task.task)
    except UnknownTaskError as exc:
        found.append(
            Warning(
                f"{label} names task {periodic_task.task!r}, which pynenc does not know: "
                f"{exc.reason}.",
                hint="Every due time will be recorded as an error run until it names a "
                "pynenc task ('module.function' of an @app.task), or is disabled.",
                obj=periodic_task,
                id="pynenc_django_beat.W001",
            )
        )
    queue = (periodic_task.queue or "").strip()
    if queue:
        queues = known_queues(app)
        if queue not in queues:
            found.append(
                Warning(
                    f"{label} routes to queue {queue!r}, which is not one of pynenc's queues "
                    f"({', '.join(queues)}).",
                    hint="Add it to PYNENC['queues'], or clear the periodic task's queue: "
                    "until then every due time is recorded as an error run.",
                    obj=periodic_task,
                    id="pynenc_django_beat.W002",
                )
            )
        elif task is not None and queue != task.conf.queue:
            found.append(
                Warning(
                    f"{label} routes {periodic_task.task} to queue {queue!r}; the task's own "
                    f"queue is {task.conf.queue!r}.",
                    hint="Each invocation is queued on the periodic task's queue, but pynenc "
                    "re-queues an interrupted invocation (a worker crash) on the task's own "
                    "queue. Give the task that queue (@app.task(queue=...)), or silence "
                    "pynenc_django_beat.W003 if both queues are consumed.",
                    obj=periodic_task,
                    id="pynenc_django_beat.W003",
                )
            )
    if periodic_task.priority is not None and periodic_task.priority > MAX_PRIORITY:
        found.append(
            Warning(
                f"{label} has priority {periodic_task.priority}; pynenc's priorities go up to "
                f"{MAX_PRIORITY} (higher runs first), so {MAX_PRIORITY} is used.",
                obj=periodic_task,
                id="pynenc_django_beat.W004",
            )
        )
    amqp = [name for name in ("exchange", "routing_key") if getattr(periodic_task, name)]
    if _has_headers(periodic_task.headers):
        amqp.append("headers")
    if amqp:
        found.append(
            Warning(
                f"{label} sets {', '.join(amqp)}: AMQP options pynenc does not use.",
                hint="Route with the periodic task's queue instead; clear them to silence this.",
                obj=periodic_task,
                id="pynenc_django_beat.W005",
            )
        )
    try:
        periodic_task.schedule  # noqa: B018  (building it is the check)
    except Exception as exc:
        found.append(
            Warning(
                f"{label}: its schedule cannot be computed ({type(exc).__name__}: "
                f"{str(exc).strip()}).",
                hint="Solar schedules need the 'ephem' package (pip install ephem).",
                obj=periodic_task,
                id="pynenc_django_beat.W006",
            )
        )
    return found


def _has_headers(headers: str | None) -> bool:
    try:
        return bool(json.loads(headers or "{}"))
    except ValueError:
        return True
