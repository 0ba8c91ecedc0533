"""Tasks the serialization tests (``tests/serialization``) run in real runners: values
returned as they arrived, values that cannot be stored, exceptions of every kind.

Not autodiscovered (the tests import it); workers import it by the tasks' module path.
"""

from __future__ import annotations

from typing import Any

from pynenc_django import app


@app.task
def echo(value: Any) -> Any:
    """Returns what it received: it must arrive and come back as it left."""
    return value


@app.task
def arrived_as(value: Any) -> str:
    """The type the task received, by name."""
    return f"{type(value).__module__}.{type(value).__qualname__}"


@app.task
def return_lambda() -> Any:
    return lambda: 1


@app.task
def return_generator() -> Any:
    return (i for i in range(3))


class TwoArg(Exception):
    """Its ``__init__`` does not take its own ``args``: pickle cannot rebuild it."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")
        self.a = a
        self.b = b


class WithCallback(Exception):
    """Holds a lambda: it cannot be stored as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.callback = lambda: None


@app.task
def raise_two_arg(a: int, b: int) -> None:
    raise TwoArg(a, b)


@app.task
def raise_with_callback(message: str) -> None:
    raise WithCallback(message)


@app.task
def raise_local(message: str) -> None:
    class LocalError(Exception):
        pass

    raise LocalError(message)


@app.task
def raise_key_error(key: str) -> None:
    raise KeyError(key)
