"""``enqueue_on_commit``: rollback means it never exists, commit means it runs once."""

from __future__ import annotations

from types import ModuleType

import pytest
from django.db import transaction
from pynenc import Pynenc

from pynenc_django import enqueue_on_commit
from tests.runner.conftest import (
    Runners,
    assert_success_exactly_once,
)


def exists(app: Pynenc, invocation_id: str) -> bool:
    try:
        app.orchestrator.get_invocation_status(invocation_id)
    except KeyError:
        return False
    return True


def test_rolled_back_enqueue_neverexists(app: Pynenc, tasks: ModuleType) -> None:
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        invocation = enqueue_on_commit(tasks.add, 1, 2)
        assert invocation.invocation_id  # known before commit
        raise Rollback

    assert not exists(app, invocation.invocation_id)
    assert app.broker.count_invocations() == 0


def test_committed_enqueue_runs_once(app: Pynenc, tasks: ModuleType, runners: Runners) -> None:
    runners.start(processes=1)
    with transaction.atomic():
        invocation = enqueue_on_commit(tasks.add, 20, 22)
        assert not exists(app, invocation.invocation_id), "registered before commit"
    assert exists(app, invocation.invocation_id)

    assert invocation.result == 42
    assert_success_exactly_once(app, [invocation.invocation_id], runners.diag())


def test_enqueue_on_commit_rejects_registration_concurrency(app: Pynenc) -> None:
    from pynenc.conf.config_task import ConcurrencyControlType

    from tests.project.jobs.tasks import add

    deduplicated = app.task(add.func, registration_concurrency=ConcurrencyControlType.TASK)
    with pytest.raises(ValueError, match="registration_concurrency"):
        enqueue_on_commit(deduplicated, 1, 2)
