"""What a task receives, returns and raises, through real runner processes: values arrive
as they left, a result that cannot be stored fails its invocation, and exceptions reach
the caller as their own type (or a ``RemoteTaskError`` saying what they were) with the
worker's traceback, which the admin shows too."""

from __future__ import annotations

import datetime
import decimal
import uuid
from types import ModuleType
from typing import Any

import pytest
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus

from pynenc_django.admin.queries import _exception
from pynenc_django.exceptions import RemoteTaskError, ResultNotStorableError
from tests.runner.conftest import Runners, statuses

TIMEOUT = 60

VALUES: list[Any] = [
    (1, (2, "three")),
    {1, 2},
    frozenset({"a"}),
    b"\x00bytes",
    datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    datetime.date(2026, 1, 2),
    decimal.Decimal("1.10"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    {1: "int key", (1, 2): "tuple key", "py/object": "reserved-looking key"},
    InvocationStatus.SUCCESS,
    [1.5, None, {"nested": (True,)}],
]


def stored_exception(app: Pynenc, invocation_id: str) -> str:
    from pynenc_django.models import InvocationException

    row = InvocationException.objects.for_app(app.app_id).get(invocation_id=invocation_id)
    return row.exception


def test_values_arrive_and_return_as_they_left(
    app: Pynenc, runners: Runners, payloads: ModuleType
) -> None:
    runners.start(processes=1)
    group = payloads.echo.parallelize([(value,) for value in VALUES])
    results = list(group.results)
    assert results == VALUES
    assert [type(result) for result in results] == [type(value) for value in VALUES]
    assert payloads.arrived_as((1, 2)).result == "builtins.tuple"


@pytest.mark.parametrize("task_name", ["return_lambda", "return_generator"])
def test_result_that_cannot_be_stored_fails_the_invocation(
    app: Pynenc, runners: Runners, payloads: ModuleType, task_name: str
) -> None:
    runners.start(processes=1)
    invocation = getattr(payloads, task_name)()
    with pytest.raises(ResultNotStorableError) as raised:
        _ = invocation.result
    assert raised.value.task_id == getattr(payloads, task_name).task_id
    message = str(raised.value)
    assert f"tests.project.jobs.payloads.{task_name}" in message, message
    kind = "function" if task_name == "return_lambda" else "generator"
    assert f"returned a value of type {kind}, which cannot be stored" in message, message
    assert statuses(app, [invocation.invocation_id]) == {invocation.invocation_id: "failed"}

    shown = _exception(stored_exception(app, invocation.invocation_id))
    assert shown is not None
    assert shown["name"] == "pynenc_django.exceptions.ResultNotStorableError"
    assert "cannot be stored" in shown["message"]
    assert "ResultNotStorableError" in shown["traceback"]


def test_exceptions_reach_the_caller_with_the_worker_traceback(
    app: Pynenc, runners: Runners, payloads: ModuleType
) -> None:
    runners.start(processes=1)
    two_arg = payloads.raise_two_arg(1, 2)
    key_error = payloads.raise_key_error("missing")
    with_callback = payloads.raise_with_callback("callback lost")
    local = payloads.raise_local("local class")

    # Its __init__ takes (a, b), its args are ("1-2",): rebuilt without calling __init__.
    with pytest.raises(payloads.TwoArg) as raised:
        _ = two_arg.result
    error = raised.value
    assert (error.args, error.a, error.b) == (("1-2",), 1, 2)
    assert "raise TwoArg(a, b)" in error.remote_traceback
    assert any("raise TwoArg(a, b)" in note for note in error.__notes__)

    with pytest.raises(KeyError) as key_raised:
        _ = key_error.result
    assert key_raised.value.args == ("missing",)
    assert "raise KeyError(key)" in key_raised.value.remote_traceback

    # Cannot be stored (a lambda attribute) or rebuilt (a local class): our wrapper,
    # with the original's qualified name, message and traceback.
    with pytest.raises(RemoteTaskError) as remote:
        _ = with_callback.result
    assert remote.value.error_type == "tests.project.jobs.payloads.WithCallback"
    assert remote.value.message == "callback lost"
    assert "lambda" in remote.value.reason
    assert "raise WithCallback(message)" in remote.value.remote_traceback

    with pytest.raises(RemoteTaskError) as remote:
        _ = local.result
    assert remote.value.error_type.endswith("raise_local.<locals>.LocalError")
    assert remote.value.message == "local class"
    assert "raise LocalError(message)" in remote.value.remote_traceback

    for invocation, name, message, line in [
        (two_arg, "tests.project.jobs.payloads.TwoArg", "1-2", "raise TwoArg(a, b)"),
        (with_callback, "tests.project.jobs.payloads.WithCallback", "callback lost", "raise"),
    ]:
        shown = _exception(stored_exception(app, invocation.invocation_id))
        assert shown is not None
        assert shown["name"] == name
        assert shown["message"].startswith(message)
        assert line in shown["traceback"]
    shown = _exception(stored_exception(app, with_callback.invocation_id))
    assert shown is not None and "stored without its data" in shown["message"]
