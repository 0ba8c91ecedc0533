"""Celery-style calling on pynenc tasks.

``import pynenc_django`` gives every pynenc task Celery's two calling methods (pynenc has
neither, so nothing of its own is replaced)::

    charge.delay(order_id)                                  # = charge(order_id)
    charge.apply_async(args=(order_id,), countdown=30, expires=600, queue="payments")

Both return pynenc's invocation, as calling the task does. :func:`get_result` waits for
one with a timeout, and :func:`revoke` cancels one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pynenc_django.calling import binding, ids
from pynenc_django.calling.options import CallOptions, aware, call_options, finite_seconds
from pynenc_django.calling.results import get_result
from pynenc_django.calling.revoke import Revoked, RevokeOutcome, revoke

if TYPE_CHECKING:
    from pynenc.invocation.base_invocation import BaseInvocation
    from pynenc.task import Task

__all__ = [
    "CallOptions",
    "RevokeOutcome",
    "Revoked",
    "apply_async",
    "delay",
    "get_result",
    "install",
    "revoke",
]


def delay(task: Task[Any, Any], *args: Any, **kwargs: Any) -> BaseInvocation[Any, Any]:
    """Celery's ``task.delay(*args, **kwargs)``: the same as calling the task."""
    return task(*args, **kwargs)


def apply_async(
    task: Task[Any, Any],
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: float | datetime | None = None,
    queue: str | None = None,
    priority: float | None = None,
) -> BaseInvocation[Any, Any]:
    """Celery's ``task.apply_async``: call ``task`` with ``args`` and ``kwargs``, and

    * ``countdown`` (seconds) or ``eta`` (an aware datetime): not before then; the
      invocation waits in the broker's delayed messages, and the first idle worker takes
      it at that time;
    * ``expires`` (seconds from now, or an aware datetime): if no worker has started it
      by then, it ends FAILED with :class:`~pynenc_django.exceptions.InvocationExpiredError`
      and never runs;
    * ``queue``, ``priority``: instead of the task's; kept when it is rerouted or retried.

    A task under registration concurrency control that reuses a registered invocation
    returns that one, with its own options. In ``dev_mode_force_sync_tasks`` the call
    runs at once and the options are ignored, as Celery's eager mode ignores them.
    """
    if countdown is not None and eta is not None:
        raise ValueError("pass countdown or eta, not both")
    now = datetime.now(UTC)
    due_at: datetime | None = None
    if countdown is not None:
        due_at = now + timedelta(seconds=finite_seconds(countdown, "countdown"))
    elif eta is not None:
        due_at = aware(eta, "eta")
    expires_at: datetime | None = None
    if isinstance(expires, datetime):
        expires_at = aware(expires, "expires")
    elif expires is not None:
        expires_at = now + timedelta(seconds=finite_seconds(expires, "expires"))
    if queue is not None:
        _check_queue(task, queue)
    if priority is not None:
        priority = _checked_priority(priority)
    options = CallOptions(due_at=due_at, expires_at=expires_at, queue=queue, priority=priority)
    with call_options(options):
        return task(*(args or ()), **dict(kwargs or {}))


def _check_queue(task: Task[Any, Any], queue: str) -> None:
    """A queue runners can consume: the broker's, or one a registered task declares."""
    app = task.app
    known = dict.fromkeys([*app.broker.conf.queues, *(t.conf.queue for t in app.tasks.values())])
    if queue not in known:
        raise ValueError(
            f"apply_async(queue={queue!r}) for task {task.task_id.key}: no runner can consume "
            f"it (known queues: {', '.join(known)}); add it to PYNENC['queues']"
        )


def _checked_priority(priority: float) -> float:
    from pynenc.conf.config_broker import validate_priority

    value = float(priority)
    validate_priority(value, label="apply_async priority")
    return value


def install() -> None:
    """Give pynenc's ``Task`` the methods ``delay`` and ``apply_async`` (once; pynenc
    defines neither), bind every call's arguments with :mod:`.binding` and give new
    invocations time-ordered ids (:mod:`.ids`)."""
    from pynenc.task import Task

    binding.install()
    ids.install()
    if getattr(Task, "apply_async", None) is apply_async:
        return
    for name in ("delay", "apply_async"):
        if name in vars(Task):
            raise RuntimeError(f"pynenc's Task has its own {name}; pynenc-django would hide it")
    Task.delay = delay  # type: ignore[attr-defined]
    Task.apply_async = apply_async  # type: ignore[attr-defined]
