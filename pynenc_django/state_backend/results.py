"""Results and exceptions: one upserted row per invocation, and the small results the
orchestrator read along with their SUCCESS status, kept until their ``get_result``.

Exceptions are stored in pynenc's envelope with their type's qualified name, message and
traceback, and read back as their own type or a ``RemoteTaskError``
(:mod:`pynenc_django.serializer.envelope`).
"""

from __future__ import annotations

from typing import Any

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.types import Params, Result

from pynenc_django.db import retry_transient
from pynenc_django.serializer.envelope import dump_exception, load_exception
from pynenc_django.state_backend.core import StateBackendCore


class ResultsMixin(StateBackendCore[Params, Result]):
    """Part of :class:`~pynenc_django.state_backend.DjangoStateBackend`; see the module
    docstring."""

    @retry_transient
    def store_result(self, invocation_id: InvocationId, serialized_result: str) -> None:
        """Store a serialized result, replacing any stored before.

        pynenc's ``set_result`` serializes and stores in one step; the orchestrator
        serializes first and stores only once the SUCCESS that goes with it is allowed."""
        from pynenc_django.models import InvocationResult

        row = InvocationResult(
            app_id=self.app.app_id, invocation_id=invocation_id, result=serialized_result
        )
        self._upsert(InvocationResult, [row], ["app_id", "invocation_id"], ["result"])

    def _set_result(self, invocation_id: InvocationId, serialized_result: str) -> None:
        """pynenc's hook behind ``set_result``: :meth:`store_result`."""
        self.store_result(invocation_id, serialized_result)

    @retry_transient
    def _get_result(self, invocation_id: InvocationId) -> str:
        from pynenc_django.models import InvocationResult

        if (fetched := self.store.take_result(invocation_id)) is not None:
            return fetched
        return self._get_text(InvocationResult, "result", invocation_id)

    def serialize_exception(self, exception: Exception) -> str:
        """pynenc's envelope with the type's qualified name, the message and the
        traceback; an exception whose data cannot be stored is stored without it."""
        return dump_exception(self.app, exception)

    def deserialize_exception(self, serialized: str) -> Exception:
        """The exception as its own type when it can be rebuilt, else a
        ``RemoteTaskError``; the worker's traceback on it either way."""
        return load_exception(self.app, serialized)  # type: ignore[return-value]

    @retry_transient
    def _set_exception(self, invocation_id: InvocationId, serialized_exception: str) -> None:
        from pynenc_django.models import InvocationException

        row = InvocationException(
            app_id=self.app.app_id, invocation_id=invocation_id, exception=serialized_exception
        )
        self._upsert(InvocationException, [row], ["app_id", "invocation_id"], ["exception"])

    @retry_transient
    def _get_exception(self, invocation_id: InvocationId) -> str:
        from pynenc_django.models import InvocationException

        return self._get_text(InvocationException, "exception", invocation_id)

    def _get_text(self, model: type[Any], field: str, invocation_id: InvocationId) -> str:
        """The stored result or exception of an invocation; KeyError if there is none."""
        column = self.connection.ops.quote_name(field)
        sql = f"SELECT {column} FROM {self._table(model)} WHERE app_id = %s AND invocation_id = %s"
        rows = self._fetch(sql, [self.app.app_id, invocation_id])
        if not rows:
            raise KeyError(f"{field.capitalize()} for invocation {invocation_id} not found")
        return rows[0][0]
