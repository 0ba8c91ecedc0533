"""jsonpickle's pickler and unpickler, made to refuse what they would change silently.

jsonpickle writes what it cannot encode as ``null`` (a lambda, an open file, a lock),
drops dict entries whose value is a lambda or whose key is one of its tags, encodes any
iterator as a list (a generator arrives as a ``list_iterator``), and on reading turns
what it cannot rebuild into a dict, ``[]`` or ``None``. Here each of these raises
:class:`~pynenc_django.exceptions.NotSerializableError` with what to pass instead.

Exceptions whose class keeps ``BaseException``'s pickling are written as their class,
``args`` and ``__dict__`` (:data:`EXCEPTION_TAG`) and rebuilt like pickle does, except
that a class whose ``__init__`` does not take its own ``args`` (``TwoArg(a, b)`` calling
``super().__init__(f"{a}-{b}")``) is rebuilt without it (``cls.__new__``, ``args``,
``__dict__``) rather than failing with a ``TypeError`` about missing arguments.
"""

from __future__ import annotations

import io
import sys
import types
from typing import Any

from jsonpickle import tags, util  # type: ignore[import-untyped]
from jsonpickle.pickler import Pickler  # type: ignore[import-untyped]
from jsonpickle.unpickler import (  # type: ignore[import-untyped]
    Unpickler,
    _Proxy,
    loadclass,
)

from pynenc_django.exceptions import NotSerializableError

#: How an exception is written (a key no jsonpickle tag and no user dict key can be:
#: user dict keys starting with ``py/`` are escaped).
EXCEPTION_TAG = "py/pynenc_django.exception"

_BASE_REDUCE = BaseException.__reduce__
_BASE_REDUCE_EX = BaseException.__reduce_ex__
_BASE_SETSTATE = BaseException.__setstate__


def type_name(value: Any) -> str:
    """The qualified name of a value's type, as messages show it."""
    cls = type(value)
    module = getattr(cls, "__module__", "")
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def refusal(value: Any) -> str | None:
    """Why ``value`` is refused on sight, with what to pass instead; ``None`` if it is not."""
    if isinstance(value, io.IOBase):
        return (
            f"an open file or stream ({type_name(value)}) cannot be stored: pass its path, "
            "or its contents"
        )
    if isinstance(value, types.GeneratorType | types.AsyncGeneratorType | types.CoroutineType):
        return (
            f"a {type(value).__name__} cannot be stored: storing it would consume it and it "
            "would arrive as a list iterator; pass a list (list(...))"
        )
    models = sys.modules.get("django.db.models")
    if models is not None:
        if isinstance(value, models.Model):
            label = value._meta.label
            return (
                f"a model instance ({label}, pk={value.pk!r}) is not stored: it would be a "
                "stale copy of the row; pass its primary key and fetch it in the task "
                f"({label.split('.')[-1]}.objects.get(pk=...))"
            )
        if isinstance(value, models.QuerySet):
            return (
                f"a QuerySet ({value.model._meta.label}) is not stored: pass a list of primary "
                "keys (list(qs.values_list('pk', flat=True))) and query in the task"
            )
    if util.is_iterator(value):
        return (
            f"an iterator ({type_name(value)}) cannot be stored: it would be consumed and "
            "arrive as a list iterator; pass a list (list(...))"
        )
    return None


def _is_code(function: Any) -> bool:
    """A function jsonpickle would write by a name workers cannot import (a lambda, a
    nested function), or a method bound to an object (written as its class's function)."""
    if isinstance(function, types.MethodType):
        return True
    if isinstance(function, types.BuiltinMethodType):
        return not isinstance(function.__self__, types.ModuleType | type(None))
    return function.__name__ == "<lambda>" or "<locals>" in function.__qualname__


def _unstorable(value: Any) -> str:
    """Why jsonpickle could not encode ``value`` (it would have written ``null``)."""
    if isinstance(value, types.FunctionType) and _is_code(value):
        return (
            f"a lambda or nested function ({value.__qualname__}) cannot be stored: workers "
            "cannot import it; pass the data it needs, or a module-level function"
        )
    if isinstance(value, types.MethodType | types.BuiltinMethodType):
        return (
            f"a bound method ({getattr(value, '__qualname__', type_name(value))}) cannot be "
            "stored: pass the data its object holds, or a module-level function"
        )
    return (
        f"{type_name(value)} cannot be stored: it cannot be pickled (it would arrive as "
        "None); pass plain data it can be rebuilt from"
    )


def _checks_own_reduce(value: Any) -> None:
    """A class that defines its own ``__reduce__``/``__reduce_ex__`` in Python and makes
    it raise means "do not pickle me": refused, where jsonpickle would silently fall back
    to the instance's ``__dict__``."""
    cls = type(value)
    if isinstance(getattr(cls, "__reduce_ex__", None), types.FunctionType) or isinstance(
        getattr(cls, "__reduce__", None), types.FunctionType
    ):
        try:
            value.__reduce_ex__(2)
        except Exception as exc:
            raise NotSerializableError(
                f"{type_name(value)} cannot be stored: it refuses to be pickled "
                f"({type(exc).__name__}: {exc})"
            ) from exc


def _keeps_base_pickling(cls: type) -> bool:
    return (
        getattr(cls, "__reduce__", None) is _BASE_REDUCE
        and getattr(cls, "__reduce_ex__", None) is _BASE_REDUCE_EX
        and getattr(cls, "__setstate__", None) is _BASE_SETSTATE
    )


class StrictPickler(Pickler):
    """jsonpickle's ``Pickler`` with ``keys=True`` (non-string dict keys kept), raising
    instead of writing ``null`` or dropping entries (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(keys=True, warn=False)

    def _pickle_warning(self, obj: Any) -> None:
        raise NotSerializableError(_unstorable(obj))

    def _get_flattener(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType | types.MethodType | types.BuiltinMethodType) and (
            _is_code(obj)
        ):
            raise NotSerializableError(_unstorable(obj))
        return super()._get_flattener(obj)

    def _flatten_obj_instance(self, obj: Any) -> Any:
        if (reason := refusal(obj)) is not None:
            raise NotSerializableError(reason)
        if isinstance(obj, BaseException) and _keeps_base_pickling(type(obj)):
            return self._flatten_exception(obj)
        _checks_own_reduce(obj)
        return super()._flatten_obj_instance(obj)

    def _flatten_exception(self, exc: BaseException) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": util.importable_name(type(exc)),
            "args": [self._flatten(arg) for arg in exc.args],
        }
        if exc.__dict__:
            data["state"] = self._flatten(exc.__dict__)
        return {EXCEPTION_TAG: data}

    # jsonpickle drops entries whose value is a lambda or whose key is one of its tags.
    def _flatten_key_value_pair(self, k: Any, v: Any, data: dict[str, Any]) -> dict[str, Any]:
        data[k] = self._flatten(v)  # attribute names (slots); keys=True handles dicts
        return data

    def _flatten_string_key_value_pair(
        self, k: Any, v: Any, data: dict[str, Any]
    ) -> dict[str, Any]:
        if not isinstance(k, str):
            return data
        if k.startswith(("py/", tags.JSON_KEY)):
            k = self._escape_key(k)
        data[k] = self._flatten(v)
        return data

    def _flatten_non_string_key_value_pair(
        self, k: Any, v: Any, data: dict[str, Any]
    ) -> dict[str, Any]:
        if not isinstance(k, str):
            data[self._escape_key(k)] = self._flatten(v)
        return data


class StrictUnpickler(Unpickler):
    """jsonpickle's ``Unpickler`` raising where it would return a dict, ``[]``, ``()`` or
    ``None`` in place of what it cannot rebuild; rebuilds :data:`EXCEPTION_TAG`."""

    def __init__(self) -> None:
        super().__init__(keys=True, on_missing="error")

    def _restore_tags(self, obj: Any, *args: Any) -> Any:
        if type(obj) is dict and EXCEPTION_TAG in obj:
            return self._restore_exception
        return super()._restore_tags(obj, *args)

    def _restore_exception(self, obj: dict[str, Any]) -> BaseException:
        proxy = _Proxy()
        self._mkref(proxy)  # the pickler numbered the exception before its contents
        data = obj[EXCEPTION_TAG]
        cls = loadclass(data["type"], classes=self._classes)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise NotSerializableError(f"exception class {data['type']} cannot be imported")
        args = tuple(self._restore(arg) for arg in data["args"])
        state = self._restore(data["state"]) if "state" in data else None
        exc = rebuild_exception(cls, args, state)
        proxy.reset(exc)
        self._swapref(proxy, exc)
        return exc

    def _process_missing(self, class_name: str) -> None:
        # jsonpickle's ClassNotFoundError is a BaseException: no ``except Exception`` sees it.
        raise NotSerializableError(f"class {class_name} cannot be imported")

    def _restore_reduce(self, obj: Any) -> Any:
        result = super()._restore_reduce(obj)
        if type(result) is list and not result:  # jsonpickle's "could not call it"
            raise NotSerializableError(f"cannot rebuild {obj[tags.REDUCE][:1]!r}")
        return result

    def _restore_tuple(self, obj: Any) -> tuple[Any, ...]:
        return tuple(self._restore(v) for v in obj[tags.TUPLE])

    def _restore_set(self, obj: Any) -> set[Any]:
        return {self._restore(v) for v in obj[tags.SET]}

    def _restore_type(self, obj: Any) -> Any:
        typeref = loadclass(obj[tags.TYPE], classes=self._classes)
        if typeref is None:
            raise NotSerializableError(f"class {obj[tags.TYPE]} cannot be imported")
        return typeref

    def _restore_function(self, obj: Any) -> Any:
        function = loadclass(obj[tags.FUNCTION], classes=self._classes)
        if function is None:
            raise NotSerializableError(f"function {obj[tags.FUNCTION]} cannot be imported")
        return function


def rebuild_exception(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any] | None
) -> BaseException:
    """Rebuild an exception as pickle does (``cls(*args)``, then its ``__dict__``), or, if
    that fails or yields other ``args`` (an ``__init__`` that does not take its own
    ``args``), without calling ``__init__``: ``cls.__new__``, ``args``, ``__dict__``."""
    exc: BaseException | None = None
    try:
        exc = cls(*args)
        if exc.args != args:
            exc = None
    except Exception:
        exc = None
    if exc is None:
        exc = cls.__new__(cls, *args)
        exc.args = args
    if state:
        exc.__dict__.update(state)
    return exc
