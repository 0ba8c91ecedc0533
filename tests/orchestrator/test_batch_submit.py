"""A batch (``task.parallelize``) larger than pynenc's chunks and our statements: every
invocation stored, registered and queued exactly once, then run exactly once by a real
runner. (A chunk the database refuses leaves nothing: ``test_atomic_submit``; what a batch
costs in statements: ``test_statement_budget``.)"""

from __future__ import annotations

from collections import Counter
from types import ModuleType

from pynenc import Pynenc

from pynenc_django.db import STATEMENT_ROWS
from pynenc_django.models import BrokerMessage, Invocation, InvocationHistory, StateInvocation
from tests.runner import conftest as runner_tests
from tests.runner.conftest import Runners, assert_success_exactly_once, wait_all_success

# The runner tests' fixtures: the project's app (purged around the test), its tasks and
# its runner processes.
app = runner_tests.app
tasks = runner_tests.tasks
runners = runner_tests.runners

#: Several of pynenc's chunks (``parallel_batch_size``, 1,000 by our default), each over
#: our rows per INSERT (500), and not a multiple of either.
BATCH = 2_550


def counts(queryset: object, field: str = "invocation_id") -> Counter[str]:
    return Counter(queryset.values_list(field, flat=True))  # type: ignore[attr-defined]


def test_every_invocation_of_a_large_batch_is_registered_routed_and_run_once(
    app: Pynenc, tasks: ModuleType, runners: Runners
) -> None:
    chunk = tasks.add.conf.parallel_batch_size
    assert chunk > STATEMENT_ROWS, "each chunk takes several INSERTs"
    assert BATCH // chunk >= 2 and BATCH % chunk and BATCH % STATEMENT_ROWS
    group = tasks.add.parallelize([(i, BATCH) for i in range(BATCH)])
    ids = [invocation.invocation_id for invocation in group.invocations]
    assert len(set(ids)) == BATCH

    # Before any runner: stored, REGISTERED (with its history row) and queued, once each.
    state = StateInvocation.objects.for_app(app.app_id)
    assert counts(state) == Counter(ids)
    arguments = sorted(state.values_list("serialized_arguments", flat=True))
    assert arguments == sorted(f'{{"x": "{i}", "y": "{BATCH}"}}' for i in range(BATCH))
    invocations = Invocation.objects.for_app(app.app_id)
    assert counts(invocations) == Counter(ids)
    assert set(invocations.values_list("status", flat=True)) == {"registered"}
    assert set(invocations.values_list("task_id_key", flat=True)) == {tasks.add.task_id.key}
    registered = InvocationHistory.objects.for_app(app.app_id).filter(status="registered")
    assert counts(registered) == Counter(ids)
    messages = BrokerMessage.objects.for_app(app.app_id)
    assert counts(messages) == Counter(ids)
    assert set(messages.values_list("queue", flat=True)) == {tasks.add.broker_queue}

    runners.start(processes=2)
    wait_all_success(app, ids, timeout=240, diag=runners.diag)
    assert_success_exactly_once(app, ids, runners.diag())
    assert list(group.results) == [i + BATCH for i in range(BATCH)]
    assert not messages.exists(), runners.diag()
