"""``pynenc_purge``: finished work older than the cutoff goes, with everything keyed by it;
unfinished work and anything it may still reference stays."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from pynenc_django import models
from pynenc_django.ops.retention import purge
from pynenc_django.utils import now_utc

CTX = RunnerContext("Test", runner_id="retention-runner")
BIG = "x" * 5000  # stored in the client data store (above min_size_to_cache)


def echo(value: str) -> str:
    return value


def _finished(app: Pynenc, value: str, days_ago: float) -> str:
    invocation = app.task(echo)(value)
    orchestrator = app.orchestrator
    orchestrator.set_invocation_status(invocation.invocation_id, InvocationStatus.PENDING, CTX)
    orchestrator.set_invocation_status(invocation.invocation_id, InvocationStatus.RUNNING, CTX)
    orchestrator.set_invocation_result(invocation, value, CTX)
    _age(app, invocation.invocation_id, days_ago)
    return invocation.invocation_id


def _age(app: Pynenc, invocation_id: str, days_ago: float) -> None:
    when = now_utc() - timedelta(days=days_ago)
    scoped = {"app_id": app.app_id, "invocation_id": invocation_id}
    models.Invocation.objects.filter(**scoped).update(status_timestamp=when, registered_at=when)
    models.ClientData.objects.filter(app_id=app.app_id).update(created_at=when)


def _rows(app: Pynenc, invocation_id: str) -> dict[str, int]:
    scoped = {"app_id": app.app_id, "invocation_id": invocation_id}
    return {
        "invocation": models.Invocation.objects.filter(**scoped).count(),
        "state": models.StateInvocation.objects.filter(**scoped).count(),
        "history": models.InvocationHistory.objects.filter(**scoped).count(),
        "result": models.InvocationResult.objects.filter(**scoped).count(),
        "arguments": models.InvocationArgument.objects.filter(**scoped).count(),
    }


def test_purges_old_finished_invocations_and_keeps_the_rest(app_instance: Pynenc) -> None:
    old = [_finished(app_instance, f"old-{i}", days_ago=40) for i in range(5)]
    recent = _finished(app_instance, "recent", days_ago=1)
    waiting = app_instance.task(echo)("waiting")
    _age(app_instance, waiting.invocation_id, 60)
    progress: list[tuple[str, int]] = []

    report = purge(
        app_instance.app_id,
        "default",
        cutoff=now_utc() - timedelta(days=30),
        batch_size=2,
        progress=lambda table, n: progress.append((table, n)),
    )

    assert report.deleted["invocations"] == 5
    assert [n for table, n in progress if table == "invocations"] == [2, 4, 5]
    for invocation_id in old:
        assert set(_rows(app_instance, invocation_id).values()) == {0}
    assert _rows(app_instance, recent)["result"] == 1
    assert _rows(app_instance, waiting.invocation_id)["invocation"] == 1
    assert app_instance.orchestrator.get_invocation_status(waiting.invocation_id) == (
        InvocationStatus.REGISTERED
    )


def test_client_data_an_unfinished_invocation_may_need_is_kept(app_instance: Pynenc) -> None:
    done = _finished(app_instance, BIG, days_ago=40)
    waiting = app_instance.task(echo)(BIG + "!")  # another big value, still to run
    _age(app_instance, waiting.invocation_id, 50)
    assert models.ClientData.objects.filter(app_id=app_instance.app_id).count() >= 2

    purge(app_instance.app_id, "default", cutoff=now_utc() - timedelta(days=30))

    assert _rows(app_instance, done)["invocation"] == 0
    # The waiting invocation is older than the data: nothing stored after it is purged.
    assert models.ClientData.objects.filter(app_id=app_instance.app_id).count() >= 1
    invocation = app_instance.state_backend.get_invocation(waiting.invocation_id)
    assert invocation.call.arguments.kwargs["value"] == BIG + "!"


def test_dry_run_counts_and_deletes_nothing(app_instance: Pynenc) -> None:
    old = _finished(app_instance, "old", days_ago=40)
    report = purge(
        app_instance.app_id, "default", cutoff=now_utc() - timedelta(days=30), dry_run=True
    )
    assert report.deleted["invocations"] == 1
    assert _rows(app_instance, old)["invocation"] == 1


def test_non_final_statuses_are_refused(app_instance: Pynenc) -> None:
    with pytest.raises(ValueError, match="only final statuses"):
        purge(
            app_instance.app_id,
            "default",
            cutoff=now_utc(),
            statuses=[InvocationStatus.RUNNING],
        )


def test_command(app_instance: Pynenc) -> None:
    _finished(app_instance, "old", days_ago=3)
    out = StringIO()
    call_command("pynenc_purge", "--older-than", "2d", "--app-id", app_instance.app_id, stdout=out)
    assert "invocations: 1 deleted" in out.getvalue()
    with pytest.raises(CommandError, match="valid: "):
        call_command("pynenc_purge", "--older-than", "2d", "--status", "runing")
    with pytest.raises(CommandError, match="only final statuses"):
        call_command("pynenc_purge", "--older-than", "2d", "--status", "running")


def test_client_data_of_purged_invocations_goes(app_instance: Pynenc) -> None:
    _finished(app_instance, BIG, days_ago=40)
    assert models.ClientData.objects.filter(app_id=app_instance.app_id).exists()

    report = purge(app_instance.app_id, "default", cutoff=now_utc() - timedelta(days=30))

    assert report.deleted["client data"] >= 1
    assert not models.ClientData.objects.filter(app_id=app_instance.app_id).exists()
