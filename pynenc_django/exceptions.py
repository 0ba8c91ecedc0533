"""Errors pynenc-django records for invocations (pynenc serializes them by class name)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from pynenc.exceptions import (
    InvocationError,
    InvocationNotFoundError,
    RunnerError,
    TaskError,
)


class InvocationLoadError(InvocationError):
    """A worker could not load a claimed invocation: its task cannot be imported (a deploy
    renamed or removed it), or its stored data cannot be read. The invocation is FAILED
    with this error instead of being retried forever, and its message is consumed.

    ``message`` is the original error's text and ``error_type`` its class name."""

    def __init__(
        self,
        invocation_id: str,
        message: str | None = None,
        task_id_key: str = "",
        error_type: str = "",
    ) -> None:
        super().__init__(invocation_id, message)
        self.task_id_key = task_id_key
        self.error_type = error_type

    def __str__(self) -> str:
        return (
            f"invocation {self.invocation_id} of task {self.task_id_key} cannot be loaded "
            f"by the worker: {self.error_type}: {self.message}"
        )

    def _to_json_dict(self) -> dict[str, Any]:
        return {
            **super()._to_json_dict(),
            "task_id_key": self.task_id_key,
            "error_type": self.error_type,
        }

    @classmethod
    def _from_json_dict(cls, json_dict: dict[str, Any]) -> InvocationLoadError:
        return cls(**json_dict)


class InvocationNotStoredError(InvocationNotFoundError, KeyError):
    """A look-up by an invocation id that is not stored: unknown, purged, of another app,
    or registered in a transaction that has not committed yet.

    pynenc's :class:`~pynenc.exceptions.InvocationNotFoundError`, which its state backend
    raises for ``get_invocation``; also a ``KeyError``, which pynenc documents for its
    orchestrator's status look-ups (and callers catch)."""

    @classmethod
    def for_app(cls, invocation_id: str, app_id: str, db_alias: str) -> InvocationNotStoredError:
        return cls(
            invocation_id,
            f"no invocation with this id is stored for app {app_id!r} on database alias "
            f"{db_alias!r}: an unknown or purged id, or one registered in a transaction "
            "that has not committed yet",
        )


class NotMigratedError(ImproperlyConfigured):
    """pynenc's tables are missing (or not up to date) on the database alias: the project
    did not run ``manage.py migrate pynenc_django`` there. ``detail`` is the database's
    own error, when one revealed it."""

    def __init__(self, alias: str, detail: str = "") -> None:
        super().__init__(alias, detail)
        self.alias = alias
        self.detail = detail

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"pynenc's tables are not up to date on database alias {self.alias!r}{detail}. "
            f"Run: manage.py migrate pynenc_django --database {self.alias}"
        )


class WorkersCannotStartError(RunnerError, CommandError):
    """The runner's workers die as they start, again and again: the runner stops instead
    of respawning them forever. A ``CommandError``, so ``manage.py pynenc_runner`` exits
    non-zero with the message and no traceback."""


class NotSerializableError(TypeError):
    """A value the serializer (:class:`pynenc_django.serializer.DjangoSerializer`) refuses,
    because it would arrive changed (a lambda as ``None``, a generator as a list
    iterator) or not at all; the message says what to pass instead. A ``TypeError``, so
    pynenc's call reports it with the task and the argument it came from."""


class ResultNotStorableError(TaskError):
    """A task returned a value that cannot be stored: the invocation ends FAILED with this
    error, instead of SUCCESS with ``None``. The message names the invocation, the
    value's type and the reason."""


#: The attribute a task's exception carries, where it is read, with the worker's traceback.
REMOTE_TRACEBACK_ATTRIBUTE = "remote_traceback"


class RemoteTaskError(Exception):
    """A task's exception that cannot be rebuilt where it is read (its class cannot be
    imported there, or its arguments or attributes could not be stored), instead of a
    ``None`` or another exception in its place: ``error_type`` is its class's qualified
    name, ``message`` its text, ``remote_traceback`` the worker's traceback and
    ``reason`` why it is not the original."""

    def __init__(
        self, error_type: str, message: str = "", remote_traceback: str = "", reason: str = ""
    ) -> None:
        super().__init__(error_type, message, remote_traceback, reason)
        self.error_type = error_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.reason = reason

    def __str__(self) -> str:
        text = f"{self.error_type}: {self.message}" if self.message else self.error_type
        return f"{text} [not rebuilt: {self.reason}]" if self.reason else text


class InvocationExpiredError(InvocationError):
    """An invocation that had not started by its call's ``expires`` time
    (``apply_async(expires=...)``): it ended FAILED without running."""

    def __init__(
        self,
        invocation_id: str,
        message: str | None = None,
        task_id_key: str = "",
        expired_at: str = "",
    ) -> None:
        super().__init__(invocation_id, message)
        self.task_id_key = task_id_key
        self.expired_at = expired_at

    def __str__(self) -> str:
        return (
            f"invocation {self.invocation_id} of task {self.task_id_key} expired at "
            f"{self.expired_at} before a worker started it; it was not run"
        )

    def _to_json_dict(self) -> dict[str, Any]:
        return {
            **super()._to_json_dict(),
            "task_id_key": self.task_id_key,
            "expired_at": self.expired_at,
        }

    @classmethod
    def _from_json_dict(cls, json_dict: dict[str, Any]) -> InvocationExpiredError:
        return cls(**json_dict)


class ResultTimeoutError(TimeoutError):
    """A wait for an invocation's result (``get_result(..., timeout=...)``) ran out of
    time. The invocation is untouched: it may still run and finish."""

    def __init__(self, invocation_id: str, timeout: float, status: str) -> None:
        super().__init__(
            f"invocation {invocation_id} did not finish within {timeout:g}s (it is {status})"
        )
        self.invocation_id = invocation_id
        self.timeout = timeout
        self.status = status


class InvocationRevokedError(InvocationError):
    """An invocation revoked from code (:func:`pynenc_django.revoke`): cancelled while it
    waited for a worker (``terminated`` False: it never ran), or, with ``terminate=True``,
    stopped while it ran by killing its worker (``terminated`` True). Either way it ended
    FAILED with this error and does not run again. ``reason`` and ``requested_by`` are
    what the caller gave."""

    def __init__(
        self,
        invocation_id: str,
        message: str | None = None,
        task_id_key: str = "",
        reason: str = "",
        requested_by: str = "",
        terminated: bool = False,
    ) -> None:
        super().__init__(invocation_id, message)
        self.task_id_key = task_id_key
        self.reason = reason
        self.requested_by = requested_by
        self.terminated = terminated

    def __str__(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        how = (
            "it was stopped while running (its worker was killed)"
            if self.terminated
            else "it had not started, and was not run"
        )
        return (
            f"invocation {self.invocation_id} of task {self.task_id_key} was revoked by "
            f"{self.requested_by}{why}; {how}"
        )

    def _to_json_dict(self) -> dict[str, Any]:
        return {
            **super()._to_json_dict(),
            "task_id_key": self.task_id_key,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "terminated": self.terminated,
        }

    @classmethod
    def _from_json_dict(cls, json_dict: dict[str, Any]) -> InvocationRevokedError:
        return cls(**json_dict)


class TimeLimitExceededError(InvocationError):
    """An invocation ran past its task's ``time_limit`` (seconds, from its start on a
    worker): its runner killed the worker and recorded it FAILED with this error; it does
    not run again."""

    def __init__(
        self,
        invocation_id: str,
        message: str | None = None,
        task_id_key: str = "",
        time_limit: float = 0.0,
    ) -> None:
        super().__init__(invocation_id, message)
        self.task_id_key = task_id_key
        self.time_limit = time_limit

    def __str__(self) -> str:
        return (
            f"invocation {self.invocation_id} of task {self.task_id_key} ran past its "
            f"time_limit of {self.time_limit:g}s; its worker was killed, and it does not "
            "run again"
        )

    def _to_json_dict(self) -> dict[str, Any]:
        return {
            **super()._to_json_dict(),
            "task_id_key": self.task_id_key,
            "time_limit": self.time_limit,
        }

    @classmethod
    def _from_json_dict(cls, json_dict: dict[str, Any]) -> TimeLimitExceededError:
        return cls(**json_dict)


class SoftTimeLimitExceeded(Exception):
    """Raised inside a running task once its ``soft_time_limit`` has passed: catch it to
    clean up (or to return early) before the hard ``time_limit`` kills the worker. Not
    caught, it fails the invocation like any exception of the task."""

    def __init__(self, invocation_id: str, task_id_key: str, soft_time_limit: float) -> None:
        super().__init__(invocation_id, task_id_key, soft_time_limit)
        self.invocation_id = invocation_id
        self.task_id_key = task_id_key
        self.soft_time_limit = soft_time_limit

    def __str__(self) -> str:
        return (
            f"invocation {self.invocation_id} of task {self.task_id_key} ran past its "
            f"soft_time_limit of {self.soft_time_limit:g}s"
        )
