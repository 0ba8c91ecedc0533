"""An argument that cannot be stored as it is fails the call, naming the task, the
argument and the reason, before anything is stored: never ``None`` (a lambda, an open
file), a list iterator (a generator) or a stale model copy in the task."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import jsonpickle
import pytest
from pynenc import Pynenc
from pynenc.exceptions import SerializationError

from pynenc_django.serializer import DjangoSerializer
from tests.serialization.conftest import stored_rows


class RefusesPickling:
    def __reduce__(self) -> Any:
        raise RuntimeError("holds a socket")


def _generator() -> Iterator[int]:
    yield 1


def _open_file() -> Any:
    return open(__file__)  # noqa: SIM115  (closed by the test)


#: name -> (a factory of the value, what the error must say about it)
REFUSED: dict[str, tuple[Callable[[], Any], str]] = {
    "lambda": (lambda: lambda: 1, "lambda"),
    "open file": (_open_file, "open file"),
    "stream": (lambda: io.BytesIO(b"x"), "open file or stream"),
    "refuses pickling": (RefusesPickling, "refuses to be pickled"),
    "generator": (_generator, "pass a list"),
    "iterator": (lambda: iter([1, 2]), "pass a list"),
    "bound method": (lambda: "abc".upper, "bound method"),
    "lambda in a dict": (lambda: {"callback": lambda: None}, "lambda"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_argument_fails_the_call_and_stores_nothing(
    app: Pynenc, payloads: ModuleType, name: str
) -> None:
    factory, reason = REFUSED[name]
    value = factory()
    before = stored_rows(app)
    try:
        with pytest.raises(SerializationError) as raised:
            payloads.echo(value)
    finally:
        if hasattr(value, "close"):
            value.close()
    message = str(raised.value)
    assert "tests.project.jobs.payloads.echo" in message, message
    assert "argument 'value'" in message, message
    assert reason in message, message
    assert stored_rows(app) == before


def test_refused_argument_of_a_batch_names_the_task(app: Pynenc, payloads: ModuleType) -> None:
    """``parallelize`` serializes in pynenc's batch path, which names no task."""
    before = stored_rows(app)
    with pytest.raises(SerializationError) as raised:
        payloads.echo.parallelize([(1,), (2,), (lambda: 3,)])
    message = str(raised.value)
    assert "Task 'tests.project.jobs.payloads.echo'" in message, message
    assert "argument 'value'" in message and "lambda" in message, message
    assert stored_rows(app) == before


def test_model_instance_is_refused_with_what_to_pass(app: Pynenc, payloads: ModuleType) -> None:
    from django.contrib.auth.models import Group

    group = Group.objects.create(name=f"serialization-{app.app_id}")
    try:
        before = stored_rows(app)
        with pytest.raises(SerializationError) as raised:
            payloads.echo(group)
        message = str(raised.value)
        assert "auth.Group" in message and f"pk={group.pk}" in message, message
        assert "pass its primary key" in message, message
        assert stored_rows(app) == before
        with pytest.raises(SerializationError, match="list of primary keys"):
            payloads.echo(Group.objects.all())
    finally:
        group.delete()


def test_django_task_backend_refuses_before_storing(app: Pynenc, tasks: ModuleType) -> None:
    if getattr(tasks, "django_multiply", None) is None:
        pytest.skip("Django < 6: no Tasks framework")
    before = stored_rows(app)
    with pytest.raises(SerializationError) as raised:
        tasks.django_multiply.enqueue(lambda: 2, 3)
    assert "run_django_task" in str(raised.value) and "lambda" in str(raised.value)
    assert stored_rows(app) == before


PLAIN = [0, -1, 2**70, 1.5, "text", "é", True, None, [1, "a", None], {"a": [1, {"b": 2.5}]}]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jsonpickle's "keys" default
def test_plain_values_are_json_as_jsonpickle_writes_them(value: Any) -> None:
    """The same text as pynenc's default serializer (so argument ids of stored
    invocations do not change), read back by ``json`` alone."""
    text = DjangoSerializer.serialize(value)
    assert text == jsonpickle.dumps(value, keys=False) == json.dumps(value)
    assert DjangoSerializer.deserialize(text) == value


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_keys_jsonpickle_would_drop_or_change_are_kept() -> None:
    value = {"py/object": "os.system", 1: "int key", (1, 2): "tuple key", "json://x": 0}
    assert (
        jsonpickle.loads(jsonpickle.dumps(value, keys=False), keys=False) != value
    )  # pynenc's default loses them
    back = DjangoSerializer.deserialize(DjangoSerializer.serialize(value))
    assert back == value


def test_enqueue_on_commit_refuses_at_the_call_not_at_commit(
    app: Pynenc, payloads: ModuleType
) -> None:
    from django.db import transaction

    from pynenc_django import enqueue_on_commit

    before = stored_rows(app)
    with (
        transaction.atomic(),
        pytest.raises(SerializationError, match="argument 'value'.*lambda"),
    ):
        enqueue_on_commit(payloads.echo, lambda: 1)
    assert stored_rows(app) == before
