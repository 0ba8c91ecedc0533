"""Binding a call's arguments to its task's parameters, without pynenc's per-call cost.

pynenc's ``Arguments.from_call`` builds ``inspect.signature(func)`` on every call, then
binds through it: in a batch of 2,000 calls that was 15% of ``parallelize``'s time, and 4%
of a single ``.delay()``'s CPU in the client. Here the signature is built once per
function, and the usual task (parameters that are positional-or-keyword, nothing else)
is bound by name and position directly. Any other call (``*args``, ``**kwargs``,
keyword-only or positional-only parameters, a missing or unexpected argument) goes
through ``Signature.bind`` exactly as pynenc does, so the outcome, ``TypeError`` included,
is pynenc's own. Either way the arguments come out in parameter order, defaults applied.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

#: Functions whose signature is kept (tasks are few; a bound keeps test suites in check).
CACHED_FUNCTIONS = 4096

_PLAIN = inspect.Parameter.POSITIONAL_OR_KEYWORD
_EMPTY = inspect.Parameter.empty


class _Plan(NamedTuple):
    signature: inspect.Signature
    #: The parameter names in order if every one is positional-or-keyword, else None.
    names: tuple[str, ...] | None
    defaults: Mapping[str, Any]


@functools.lru_cache(maxsize=CACHED_FUNCTIONS)
def _plan(func: Callable[..., Any]) -> _Plan:
    signature = inspect.signature(func)
    params = signature.parameters.values()
    plain = all(p.kind is _PLAIN for p in params)
    return _Plan(
        signature,
        tuple(signature.parameters) if plain else None,
        {p.name: p.default for p in params if p.default is not _EMPTY},
    )


def bind_arguments(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """``{parameter: value}`` of a call of ``func``, in parameter order, defaults applied:
    what ``Signature.bind(*args, **kwargs)`` then ``apply_defaults()`` give."""
    plan = _plan(func)
    names = plan.names
    if names is not None and len(args) <= len(names):
        bound: dict[str, Any] = {}
        by_keyword = 0
        for position, name in enumerate(names):
            if position < len(args):
                if name in kwargs:
                    break  # "multiple values for argument": bind says so
                bound[name] = args[position]
            elif name in kwargs:
                bound[name] = kwargs[name]
                by_keyword += 1
            elif name in plan.defaults:
                bound[name] = plan.defaults[name]
            else:
                break  # missing: bind says so
        else:
            if by_keyword == len(kwargs):  # no unexpected keyword
                return bound
    full = plan.signature.bind(*args, **kwargs)
    full.apply_defaults()
    return full.arguments


def install() -> None:
    """Bind pynenc's calls here (``Arguments.from_call``: every task call, ``parallelize``
    and workflows go through it)."""
    from pynenc.arguments import Arguments

    if getattr(Arguments.from_call, "__func__", None) is _from_call:
        return
    Arguments.from_call = classmethod(_from_call)  # type: ignore[method-assign, assignment]


def _from_call(cls: type[Any], func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return cls(bind_arguments(func, args, kwargs))
