"""A Django 6 Tasks backend that runs ``@task`` functions on pynenc runners.

    TASKS = {"default": {"BACKEND": "pynenc_django.task_backend.PynencTaskBackend"}}

``.enqueue()`` registers a pynenc invocation (in the project's app, see
:mod:`pynenc_django.project`) of one generic pynenc task that imports and calls the
Django task by its path, so Django task modules need nothing pynenc-specific.
``TaskResult.id`` is the pynenc invocation id: the admin, ``pynenc_status`` and
``get_result`` all speak of the same thing.

Mapping: ``queue_name`` → pynenc queue (it must be one of the broker's queues),
``priority`` (-100..100) → pynenc priority (same range, higher first), ``run_after`` →
a delayed invocation (``apply_async(eta=...)``: the first idle worker takes it then). Options:
``ENQUEUE_ON_COMMIT`` (default ``False``) registers the invocation only when the current
transaction commits, yet returns the result (and its id) at once.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.tasks import TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils import timezone
from django.utils.module_loading import import_string
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus

from pynenc_django import app as pynenc_app
from pynenc_django.calling.options import CallOptions, aware, call_options
from pynenc_django.transactions import enqueue_on_commit_using

if TYPE_CHECKING:
    from django.tasks import Task as DjangoTask
    from pynenc.invocation.dist_invocation import DistributedInvocation

TRACEBACK_ATTRIBUTE = "pynenc_django_traceback"

_STATUS = {
    InvocationStatus.RUNNING: TaskResultStatus.RUNNING,
    InvocationStatus.PAUSED: TaskResultStatus.RUNNING,
    InvocationStatus.SUCCESS: TaskResultStatus.SUCCESSFUL,
    InvocationStatus.FAILED: TaskResultStatus.FAILED,
    InvocationStatus.CONCURRENCY_CONTROLLED_FINAL: TaskResultStatus.FAILED,
}  # everything else is waiting to run (again): READY


@pynenc_app.task
def run_django_task(module_path: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The pynenc task behind every Django task: import it by path and call it."""
    django_task: DjangoTask = import_string(module_path)
    try:
        if django_task.takes_context:
            invocation_id = run_django_task.invocation.invocation_id
            backend = django_task.get_backend()
            result = backend.get_result(invocation_id)
            return django_task.call(TaskContext(task_result=result), *args, **kwargs)
        return django_task.call(*args, **kwargs)
    except Exception as exc:
        # Kept on the exception (pynenc stores it) so get_result can show the traceback.
        setattr(exc, TRACEBACK_ATTRIBUTE, "".join(traceback.format_exception(exc)))
        raise


class PynencTaskBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.enqueue_on_commit = bool(self.options.get("ENQUEUE_ON_COMMIT", False))

    def validate_task(self, task: DjangoTask) -> None:
        if task.run_after is not None and timezone.is_naive(task.run_after):
            raise InvalidTask(f"run_after={task.run_after!r} is naive; pass an aware datetime")
        super().validate_task(task)

    def enqueue(self, task: DjangoTask, args: Sequence[Any], kwargs: dict[str, Any]) -> TaskResult:
        self.validate_task(task)
        pynenc_task = self._pynenc_task(task)
        call_args = (task.module_path, list(args), dict(kwargs))
        delayed = CallOptions(due_at=aware(task.run_after, "run_after")) if task.run_after else None
        with call_options(delayed) if delayed is not None else nullcontext():
            if self.enqueue_on_commit:
                invocation = enqueue_on_commit_using(None, pynenc_task, *call_args)
            else:
                invocation = pynenc_task(*call_args)
        return self._result(task, invocation.invocation_id, args, kwargs)

    def _pynenc_task(self, task: DjangoTask) -> Any:
        """``run_django_task`` routed to the Django task's queue and priority."""
        from pynenc.task import Task

        known = tuple(pynenc_app.broker.conf.queues)
        if task.queue_name not in known:
            raise InvalidTask(
                f"Queue {task.queue_name!r} is not one of pynenc's broker queues "
                f"({', '.join(known)}); add it to PYNENC['queues']."
            )
        options = {"queue": task.queue_name, "priority": float(task.priority)}
        return Task.create_for_app(pynenc_app, run_django_task.func, options)

    def get_result(self, result_id: str) -> TaskResult:
        orchestrator = pynenc_app.orchestrator
        invocation_id = InvocationId(result_id)
        try:
            status = orchestrator.get_invocation_status(invocation_id)
            invocation: DistributedInvocation = pynenc_app.state_backend.get_invocation(
                invocation_id
            )
        except KeyError as exc:  # the orchestrator's "Invocation ID ... not found"
            raise TaskResultDoesNotExist(result_id) from exc
        arguments = invocation.call.arguments.kwargs
        module_path = arguments.get("module_path")
        if module_path is None:
            raise TaskResultDoesNotExist(f"{result_id} is not a Django task's invocation")
        task: DjangoTask = import_string(module_path)
        result = self._result(task, result_id, arguments["args"], arguments["kwargs"])
        self._fill_from_history(result, invocation_id, _STATUS.get(status, TaskResultStatus.READY))
        if status == InvocationStatus.SUCCESS:
            object.__setattr__(
                result, "_return_value", pynenc_app.state_backend.get_result(invocation_id)
            )
        elif status == InvocationStatus.FAILED:
            error = pynenc_app.state_backend.get_exception(invocation_id)
            kind = type(error)
            result.errors.append(
                TaskError(
                    exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                    traceback=getattr(error, TRACEBACK_ATTRIBUTE, "") or repr(error),
                )
            )
        return result

    def _result(self, task: DjangoTask, result_id: str, args: Any, kwargs: Any) -> TaskResult:
        return TaskResult(
            task=task,
            id=str(result_id),
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    def _fill_from_history(
        self, result: TaskResult, invocation_id: InvocationId, status: TaskResultStatus
    ) -> None:
        history = pynenc_app.state_backend.get_history(invocation_id)
        runs = [h for h in history if h.status_record.status == InvocationStatus.RUNNING]
        finals = [h for h in history if h.status_record.status.is_final()]
        times: dict[str, datetime | None] = {
            "enqueued_at": history[0].timestamp if history else None,
            "started_at": runs[0].timestamp if runs else None,
            "last_attempted_at": runs[-1].timestamp if runs else None,
            "finished_at": finals[-1].timestamp if finals else None,
        }
        for name, value in times.items():
            object.__setattr__(result, name, value)
        object.__setattr__(result, "status", status)
        result.worker_ids.extend(h.status_record.runner_id or "" for h in runs)
