"""Where the orchestrator serializes: arguments before anything is stored, results before
their SUCCESS, each error naming the task."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pynenc.exceptions import SerializationError

from pynenc_django.exceptions import ResultNotStorableError
from pynenc_django.serializer.strict import type_name

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.call import Call
    from pynenc.invocation.dist_invocation import DistributedInvocation


def serialize_arguments_first(calls: Iterable[Call]) -> None:
    """Serialize the calls' arguments (pynenc keeps them on the call) before anything is
    stored for them, so an argument that cannot be stored fails the call alone. pynenc's
    error names the argument; the task is added where pynenc leaves it out (batches)."""
    for call in calls:
        try:
            call.serialized_arguments  # noqa: B018  (computed once, kept by the call)
        except SerializationError as exc:
            key = call.task.task_id.key
            if f"Task '{key}'" in str(exc):
                raise
            raise SerializationError(f"Task '{key}': {exc}") from exc


def serialize_result(app: Pynenc, invocation: DistributedInvocation, result: Any) -> str:
    """The stored text of a task's result; a value that cannot be stored is the task's
    failure (:class:`ResultNotStorableError`), never a SUCCESS with ``None``."""
    from pynenc_django.db import is_database_error

    try:
        return app.client_data_store.serialize(result)
    except Exception as exc:
        if is_database_error(exc):  # storing a large result: the database's, not the value's
            raise
        raise result_not_storable(invocation, result, exc) from exc


def result_not_storable(
    invocation: DistributedInvocation, result: Any, error: Exception
) -> ResultNotStorableError:
    return ResultNotStorableError(
        invocation.task.task_id,
        f"invocation {invocation.invocation_id} returned a value of type "
        f"{type_name(result)}, which cannot be stored: {error}",
    )
