"""A call is stored, registered and queued in one transaction: a failure half-way leaves
nothing behind (no REGISTERED invocation that nothing would ever run), and a transient
failure is retried as a whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import OperationalError
from pynenc import Pynenc
from pynenc.runner.runner_context import RunnerContext

import pynenc_django.db
from pynenc_django.models import BrokerMessage, Invocation, StateInvocation

WORKER = RunnerContext("DjangoPersistentProcessRunner", runner_id="submit-worker")


def add(x: int, y: int) -> int:
    return x + y


class QueueDown(OperationalError):
    """Stands for any database error while queueing."""


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    built = app_instance_builder.build()
    yield built
    built.purge()


def rows(app: Pynenc) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        model.objects.filter(app_id=app.app_id).count()
        for model in (StateInvocation, Invocation, BrokerMessage)
    )


def failing_route(app: Pynenc, monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """The broker's insert fails ``failures`` times, then works; returns the call log."""
    broker = app.broker
    original = broker._route_invocations  # type: ignore[attr-defined]
    calls: list[int] = []

    def route(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise QueueDown("the queue insert failed")
        original(*args, **kwargs)

    monkeypatch.setattr(broker, "_route_invocations", route)
    return calls


def test_a_failed_queue_insert_leaves_nothing(app: Pynenc, monkeypatch: pytest.MonkeyPatch) -> None:
    task = app.task(add)
    failing_route(app, monkeypatch, failures=100)
    with pytest.raises(QueueDown):
        task(1, 2)
    assert rows(app) == (0, 0, 0)


def test_a_transient_failure_is_retried_whole(app: Pynenc, monkeypatch: pytest.MonkeyPatch) -> None:
    task = app.task(add)
    calls = failing_route(app, monkeypatch, failures=1)
    monkeypatch.setattr(pynenc_django.db, "is_transient", lambda exc: isinstance(exc, QueueDown))
    invocation = task(1, 2)
    assert len(calls) == 2
    assert rows(app) == (1, 1, 1)  # the state row too, though its first insert rolled back
    [claimed] = list(app.orchestrator.get_invocations_to_run(1, WORKER))
    app.state_backend._invocation_cache.clear()  # read it back from the table
    claimed.run(WORKER)
    assert invocation.result == 3
