"""pynenc-django: pynenc's backends on the Django ORM.

This module is imported by pynenc's plugin loader in every process that builds a
``Pynenc()``, Django-configured or not, so it must never touch settings or models.
"""

from typing import TYPE_CHECKING

from pynenc_django import calling, logs
from pynenc_django.calling import apply_async, get_result, revoke
from pynenc_django.transactions import enqueue_on_commit, enqueue_on_commit_using

logs.install()  # pynenc's log records through Django's LOGGING (see pynenc_django.logs)
calling.install()  # task.delay() and task.apply_async() (see pynenc_django.calling)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any, Protocol, TypedDict, Unpack, overload

    from pynenc import Pynenc
    from pynenc.conf.config_task import ConcurrencyControlType
    from pynenc.task import Task
    from pynenc.trigger.trigger_builder import TriggerBuilder

    class TaskOptions(TypedDict, total=False):
        """The options of pynenc's ``Pynenc.task``."""

        parallel_batch_size: int | None
        retry_for: tuple[type[Exception], ...] | None
        max_retries: int | None
        running_concurrency: ConcurrencyControlType | None
        registration_concurrency: ConcurrencyControlType | None
        key_arguments: tuple[str, ...] | None
        on_diff_non_key_args_raise: bool | None
        call_result_cache: bool | None
        disable_cache_args: tuple[str, ...] | None
        triggers: TriggerBuilder | list[TriggerBuilder] | None
        reroute_on_concurrency_control: bool | None
        queue: str | None
        priority: float | None

    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from pynenc.invocation.base_invocation import BaseInvocation

    class CeleryTask[**P, R](Task[P, R]):
        """pynenc's ``Task`` with the calling methods :func:`pynenc_django.calling.install`
        adds, for type checkers only."""

        def delay(self, *args: P.args, **kwargs: P.kwargs) -> BaseInvocation[P, R]: ...
        def apply_async(
            self,
            args: Sequence[Any] | None = None,
            kwargs: Mapping[str, Any] | None = None,
            *,
            countdown: float | None = None,
            eta: datetime | None = None,
            expires: float | datetime | None = None,
            queue: str | None = None,
            priority: float | None = None,
        ) -> BaseInvocation[P, R]: ...

    class TaskDecorator(Protocol):
        """``app.task(**options)``: the decorator, keeping the function's types."""

        @overload
        def __call__[**P, R](
            self, func: Callable[P, Coroutine[Any, Any, R]], /
        ) -> CeleryTask[P, R]: ...
        @overload
        def __call__[**P, R](self, func: Callable[P, R], /) -> CeleryTask[P, R]: ...

    class ProjectApp(Pynenc):
        """pynenc's ``Pynenc``, for type checkers only: its ``task`` keeps the decorated
        function's parameters and result type (pynenc's returns ``Task[Any, Any]``), so
        ``add(1, 2).result`` is an ``int`` and ``add("1", 2)`` a type error. An async
        task's result is what its coroutine returns, as pynenc runs it."""

        @overload
        def task[**P, R](
            self, func: Callable[P, Coroutine[Any, Any, R]], **options: Unpack[TaskOptions]
        ) -> CeleryTask[P, R]: ...
        @overload
        def task[**P, R](
            self, func: Callable[P, R], **options: Unpack[TaskOptions]
        ) -> CeleryTask[P, R]: ...
        @overload
        def task(self, func: None = None, **options: Unpack[TaskOptions]) -> TaskDecorator: ...
        def task(self, func: Any = None, **options: Any) -> Any: ...

    app: ProjectApp  # see __getattr__

__version__ = "0.1.0"
__all__ = [
    "app",
    "apply_async",
    "enqueue_on_commit",
    "enqueue_on_commit_using",
    "get_result",
    "revoke",
]


def __getattr__(name: str) -> object:
    """``from pynenc_django import app``: the project's pynenc app, built on first use."""
    if name == "app":
        from pynenc_django.project import get_app

        return get_app()
    raise AttributeError(f"module 'pynenc_django' has no attribute {name!r}")
