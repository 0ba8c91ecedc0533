"""The serializer of task arguments, results and exceptions: nothing is silently changed.

pynenc's default, :class:`~pynenc.serializer.JsonPickleSerializer`, writes what jsonpickle
cannot encode as ``null`` and turns an iterator into a list: a lambda argument reaches
the task as ``None`` and its invocation ends SUCCESS. :class:`DjangoSerializer` writes
the same JSON for everything it accepts, and raises
:class:`~pynenc_django.exceptions.NotSerializableError` for the rest (a ``TypeError``,
which pynenc reports at the call site with the task and the argument), before anything
is stored.

The default of ``PynencBuilder().django()`` (``serializer_cls``); the plugin entry point
``pynenc_django.serializer`` lets pynenc find it by name. Plain values (``str``, ``int``,
``float``, ``bool``, ``None``, and lists and string-keyed dicts of them) are written and
read with :mod:`json` alone; anything else is read back once when written, so what
would not arrive as it left is refused where it is written.
"""

from __future__ import annotations

import json
from typing import Any

from pynenc.serializer import JsonPickleSerializer

from pynenc_django.exceptions import NotSerializableError
from pynenc_django.serializer.strict import (
    EXCEPTION_TAG,
    StrictPickler,
    StrictUnpickler,
    rebuild_exception,
    type_name,
)

__all__ = [
    "EXCEPTION_TAG",
    "DjangoSerializer",
    "NotSerializableError",
    "rebuild_exception",
]

#: Beyond this depth a value is not checked for being plain (jsonpickle handles it).
_PLAIN_DEPTH = 32
_SCALARS = frozenset({str, int, float, bool, type(None)})


def is_plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON as it is: written by ``json.dumps`` exactly as jsonpickle
    writes it, and read back the same by ``json.loads``. Dict keys starting with ``py/``
    or ``json://`` (jsonpickle's tags and escapes) are not plain."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > _PLAIN_DEPTH:
        return False
    if kind is list:
        return all(is_plain(item, depth + 1) for item in value)
    if kind is dict:
        return all(
            type(key) is str
            and not key.startswith(("py/", "json://"))
            and is_plain(item, depth + 1)
            for key, item in value.items()
        )
    return False


class DjangoSerializer(JsonPickleSerializer):
    """jsonpickle's JSON, refusing what it would change (see the module docstring)."""

    @staticmethod
    def serialize(obj: Any) -> str:
        if is_plain(obj):
            return json.dumps(obj)
        try:
            text = json.dumps(StrictPickler().flatten(obj))
        except NotSerializableError:
            raise
        except RecursionError as exc:
            raise NotSerializableError(
                f"{type_name(obj)} cannot be stored: it is nested too deeply"
            ) from exc
        except Exception as exc:
            raise NotSerializableError(
                f"{type_name(obj)} cannot be stored: {type(exc).__name__}: {exc}"
            ) from exc
        _check_read_back(obj, text)
        return text

    @staticmethod
    def deserialize(serialized_obj: str) -> Any:
        try:
            value = json.loads(serialized_obj)
        except ValueError:  # not written by a serializer: read as pynenc's default would
            return JsonPickleSerializer.deserialize(serialized_obj)
        if is_plain(value):
            return value
        return StrictUnpickler().restore(value)


def _check_read_back(obj: Any, text: str) -> None:
    """Read ``text`` back: what fails or arrives as another type is refused here."""
    try:
        copy = StrictUnpickler().restore(json.loads(text))
    except Exception as exc:
        raise NotSerializableError(
            f"{type_name(obj)} cannot be stored: it cannot be rebuilt from what is stored "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if (changed := _changed(obj, copy, "", 0)) is not None:
        raise NotSerializableError(f"{type_name(obj)} cannot be stored: {changed}")


def _changed(original: Any, copy: Any, path: str, depth: int) -> str | None:
    """Where ``copy`` is not of the same types as ``original`` (containers compared item
    by item), or ``None``."""
    if type(original) is not type(copy):
        where = f"value{path}" if path else "it"
        return f"{where} would arrive as {type_name(copy)}, not {type_name(original)}"
    if depth > _PLAIN_DEPTH or original is copy:
        return None
    if isinstance(original, list | tuple):
        if len(original) != len(copy):
            return f"value{path} would arrive with {len(copy)} items, not {len(original)}"
        for index, (item, item_copy) in enumerate(zip(original, copy, strict=True)):
            if (changed := _changed(item, item_copy, f"{path}[{index}]", depth + 1)) is not None:
                return changed
    elif isinstance(original, dict):
        if len(original) != len(copy):
            return f"value{path} would arrive with {len(copy)} keys, not {len(original)}"
        for key, item in original.items():
            if type(key) is str and key in copy:
                changed = _changed(item, copy[key], f"{path}[{key!r}]", depth + 1)
                if changed is not None:
                    return changed
    elif isinstance(original, set | frozenset) and len(original) != len(copy):
        return f"value{path} would arrive with {len(copy)} items, not {len(original)}"
    return None
