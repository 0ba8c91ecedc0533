"""A call's arguments are bound as ``inspect.Signature.bind`` binds them, in every shape.

:mod:`pynenc_django.calling.binding` replaces pynenc's per-call ``inspect.signature`` with
a cached one and binds plain parameters directly; these compare it with ``inspect`` over
every combination of signatures and calls below, errors included, and check that a
task call stores what pynenc's own binding would.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from pynenc import Pynenc
from pynenc.arguments import Arguments

from pynenc_django.calling.binding import bind_arguments


def plain(a: int, b: int) -> None: ...
def with_defaults(a: int, b: int = 2, c: list[int] | None = None) -> None: ...
def no_params() -> None: ...
def var_positional(a: int, *rest: int) -> None: ...
def var_keyword(a: int, **options: Any) -> None: ...
def keyword_only(a: int, *, flag: bool = False, must: int) -> None: ...
def positional_only(a: int, /, b: int = 0) -> None: ...


def decorated(func: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


FUNCTIONS = [
    plain,
    with_defaults,
    no_params,
    var_positional,
    var_keyword,
    keyword_only,
    positional_only,
    decorated(with_defaults),
]
POSITIONALS: list[tuple[Any, ...]] = [(), (1,), (1, 2), (1, 2, [3]), (1, 2, 3, 4)]
KEYWORDS: list[dict[str, Any]] = [
    {},
    {"a": 10},
    {"b": 20},
    {"c": [30]},
    {"a": 10, "b": 20},
    {"b": 20, "c": None},
    {"must": 5},
    {"flag": True, "must": 5},
    {"unknown": 1},
    {"b": 20, "unknown": 1},
]


def inspect_binding(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        return ("TypeError", str(exc))
    bound.apply_defaults()
    return list(bound.arguments.items())


def our_binding(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        arguments = bind_arguments(func, args, dict(kwargs))
    except TypeError as exc:
        return ("TypeError", str(exc))
    return list(arguments.items())


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda f: f.__name__)
def test_every_call_binds_as_inspect_binds_it(func: Callable[..., Any]) -> None:
    for args, kwargs in itertools.product(POSITIONALS, KEYWORDS):
        expected = inspect_binding(func, args, kwargs)
        assert our_binding(func, args, kwargs) == expected, (func.__name__, args, kwargs)
        # twice: the second call uses the cached signature
        assert our_binding(func, args, kwargs) == expected, (func.__name__, args, kwargs)


def test_defaults_are_the_functions_own_objects() -> None:
    def shared(items: list[int] = []) -> None: ...  # noqa: B006  (what inspect gives)

    assert (
        bind_arguments(shared, (), {})["items"]
        is inspect.signature(shared).parameters["items"].default
    )


def add(x: int, y: int = 5) -> int:
    return x + y


def test_pynenc_task_calls_go_through_the_binding(app_instance: Pynenc) -> None:
    task = app_instance.task(add)
    assert Arguments.from_call(add, 1).kwargs == {"x": 1, "y": 5}
    invocation = task(2, y=3)
    assert invocation.arguments.kwargs == {"x": 2, "y": 3}
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        task(1, z=2)
