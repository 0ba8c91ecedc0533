"""Errors pynenc-django records for invocations (pynenc serializes them by class name)."""

from __future__ import annotations

from typing import Any

from pynenc.exceptions import InvocationError


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
