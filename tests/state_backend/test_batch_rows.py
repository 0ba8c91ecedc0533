"""A batch's invocations are written column by column (no model instance per row, one
array per column on PostgreSQL): what is read back from the table, by a process that
has not seen them, is what pynenc created, and writing them again changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from pynenc import Pynenc

from pynenc_django.models import Invocation, StateInvocation


def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def app(app_instance: Pynenc) -> Pynenc:
    return app_instance  # tests/conftest.py's: built, purged afterwards


def test_batch_rows_read_back_as_created(app: Pynenc) -> None:
    task = app.task(add)
    group = task.parallelize([(i, {"k": [i, None]} if i % 2 else i) for i in range(150)])
    created = {inv.invocation_id: inv for inv in group.invocations}
    assert len(created) == 150
    backend: Any = app.state_backend
    backend.store.invocations.clear()  # read from the table, as another process would

    for invocation_id, invocation in created.items():
        stored = backend.get_invocation(invocation_id)
        assert stored.call.call_id == invocation.call.call_id
        assert stored.call.serialized_arguments == invocation.call.serialized_arguments
        assert stored.call.arguments.kwargs == invocation.call.arguments.kwargs
        assert stored.parent_invocation_id is None and stored.workflow is None

    rows = StateInvocation.objects.filter(app_id=app.app_id)
    assert rows.count() == 150
    assert set(rows.values_list("task_id_key", flat=True)) == {task.task_id.key}
    assert not rows.filter(registered_at__isnull=True).exists()
    assert not rows.exclude(call_options__isnull=True).exists()
    for invocation_id, call_id_key, arguments_id in rows.values_list(
        "invocation_id", "call_id_key", "arguments_id"
    ):
        call_id = created[invocation_id].call.call_id
        assert (call_id_key, arguments_id) == (call_id.key, call_id.args_id)
    registered = Invocation.objects.filter(app_id=app.app_id)
    assert set(registered.values_list("invocation_id", flat=True)) == set(created)
    assert set(registered.values_list("registered_by_inv_id", flat=True)) == {None}


def test_writing_a_batch_again_changes_nothing(app: Pynenc) -> None:
    task = app.task(add)
    group = task.parallelize([(i, i) for i in range(120)])
    rows = StateInvocation.objects.filter(app_id=app.app_id)
    before = sorted(rows.values_list("invocation_id", "registered_at", "serialized_arguments"))
    backend: Any = app.state_backend
    backend.store.invocations.clear()  # so the upsert writes instead of skipping

    backend.upsert_invocations(list(group.invocations))

    after = sorted(rows.values_list("invocation_id", "registered_at", "serialized_arguments"))
    assert after == before
