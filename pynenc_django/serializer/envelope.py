"""A task's exception as stored: pynenc's JSON envelope, plus what a reader needs when the
exception itself cannot be rebuilt, and the worker's traceback.

pynenc's envelope is ``{"error_name", "pynenc_error", "error_data"}``; ``error_data`` is
the serializer's text (or, for pynenc's own errors, their JSON). Added here, all JSON,
so the admin can show them without rebuilding anything: ``error_type`` (module and
qualified name), ``message`` (``str()`` of the exception), ``traceback`` (the worker's,
formatted) and, when the exception's data could not be stored, ``error_data_problem``.

Read back, the exception is the original type when it can be rebuilt, else a
:class:`~pynenc_django.exceptions.RemoteTaskError` with the same name, message and
traceback; never ``None`` or another error. Either way the worker's traceback is on it,
as :data:`~pynenc_django.exceptions.REMOTE_TRACEBACK_ATTRIBUTE` and as a note.
"""

from __future__ import annotations

import json
import traceback
from typing import TYPE_CHECKING, Any

from pynenc.exceptions import PynencError

from pynenc_django.exceptions import REMOTE_TRACEBACK_ATTRIBUTE, RemoteTaskError

if TYPE_CHECKING:
    from pynenc.app import Pynenc

#: Longest traceback stored: its head and its tail (where the error is) are kept.
TRACEBACK_MAX_CHARS = 64_000
_HEAD_CHARS = 8_000

#: Written on a read-back exception before the worker's traceback (``__notes__``).
NOTE_PREFIX = "Traceback in the worker (pynenc-django):\n"


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def format_traceback(exception: BaseException) -> str:
    """The exception's traceback as Python prints it (its causes too), at most
    :data:`TRACEBACK_MAX_CHARS`."""
    try:
        text = "".join(traceback.format_exception(exception))
    except Exception as exc:  # a broken __str__ or __notes__
        text = f"(traceback not available: {type(exc).__name__}: {exc})"
    if len(text) > TRACEBACK_MAX_CHARS:
        skipped = len(text) - TRACEBACK_MAX_CHARS
        tail = text[-(TRACEBACK_MAX_CHARS - _HEAD_CHARS) :]
        text = f"{text[:_HEAD_CHARS]}\n[... {skipped} characters left out ...]\n{tail}"
    return text


def _message(exception: BaseException) -> str:
    try:
        return str(exception)
    except Exception as exc:
        return f"(str() failed: {type(exc).__name__}: {exc})"


def _pynenc_error_data(exception: PynencError) -> str:
    """pynenc's JSON of its own errors, without what reading one back adds (pynenc
    rebuilds them with ``cls(**data)``)."""
    data = exception._to_json_dict()
    if data is exception.__dict__:
        data = {
            key: value
            for key, value in data.items()
            if key not in ("__notes__", REMOTE_TRACEBACK_ATTRIBUTE)
        }
    return json.dumps(data)


def dump_exception(app: Pynenc, exception: BaseException) -> str:
    """The stored text of a task's exception (see the module docstring)."""
    from pynenc_django.db import is_database_error

    envelope: dict[str, Any] = {
        "error_name": type(exception).__name__,
        "pynenc_error": False,
        "error_data": None,
        "error_type": qualified_name(type(exception)),
        "message": _message(exception),
        "traceback": format_traceback(exception),
    }
    problems = []
    if isinstance(exception, PynencError):
        try:
            envelope["error_data"] = _pynenc_error_data(exception)
            envelope["pynenc_error"] = True
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
    if envelope["error_data"] is None:
        try:
            envelope["error_data"] = app.client_data_store.serialize(exception)
        except Exception as exc:
            if is_database_error(exc):
                raise
            problems.append(str(exc))
    if envelope["error_data"] is None:
        envelope["error_data_problem"] = "; ".join(problems)
    return json.dumps(envelope)


def load_exception(app: Pynenc, serialized: str) -> BaseException:
    """The exception a stored text describes (see the module docstring)."""
    from pynenc_django.db import is_database_error

    envelope = json.loads(serialized)
    data = envelope.get("error_data")
    reason = envelope.get("error_data_problem") or "its data was not stored"
    exception: BaseException | None = None
    if data is not None:
        try:
            if envelope.get("pynenc_error"):
                exception = PynencError.from_json(envelope["error_name"], data)
            else:
                exception = app.client_data_store.deserialize(data)
            if not isinstance(exception, BaseException):
                reason = f"its data reads back as {type(exception).__qualname__}"
                exception = None
        except Exception as exc:
            if is_database_error(exc):
                raise
            reason = f"it cannot be rebuilt here ({type(exc).__name__}: {exc})"
            exception = None
    remote_traceback = str(envelope.get("traceback") or "")
    if exception is None:
        exception = RemoteTaskError(
            str(envelope.get("error_type") or envelope.get("error_name") or "Exception"),
            str(envelope.get("message", "")),
            remote_traceback,
            reason,
        )
    if remote_traceback:
        attach_traceback(exception, remote_traceback)
    return exception


def attach_traceback(exception: BaseException, remote_traceback: str) -> None:
    """Put the worker's traceback on the exception read back: an attribute, and a note
    (printed with the exception wherever it is raised again)."""
    try:
        setattr(exception, REMOTE_TRACEBACK_ATTRIBUTE, remote_traceback)
        exception.add_note(NOTE_PREFIX + remote_traceback.rstrip("\n"))
    except (AttributeError, TypeError):
        pass  # an exception class with __slots__ and no __dict__
