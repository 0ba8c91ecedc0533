"""A parent waiting on its children with two workers: blocking edges, no deadlock."""

from __future__ import annotations

from types import ModuleType

from pynenc import Pynenc

from tests.runner.conftest import (
    SUCCESS,
    Runners,
    describe,
    statuses,
    wait_until,
)

CHILDREN = 10


def test_fan_out_completes_and_records_blocking_edges_while_waiting(
    app: Pynenc, tasks: ModuleType, runners: Runners
) -> None:
    from pynenc_django.models import BlockingEdge, StateInvocation

    runners.start(processes=2)
    parent = tasks.fan_out(CHILDREN)
    parent_id = parent.invocation_id
    edges = BlockingEdge.objects.for_app(app.app_id)
    seen_waiting_on: set[str] = set()

    def finished() -> bool:
        seen_waiting_on.update(
            edges.filter(waiter_id=parent_id).values_list("waited_id", flat=True)
        )
        return statuses(app, [parent_id]).get(parent_id) in (SUCCESS, "failed")

    wait_until(
        finished,
        90,
        lambda: f"fan_out did not finish:\n{describe(app, [parent_id])}\n{runners.diag()}",
        interval=0.02,
    )

    assert statuses(app, [parent_id]) == {parent_id: SUCCESS}, runners.diag()
    assert parent.result == sum(i * i for i in range(CHILDREN))
    assert seen_waiting_on, (
        f"no BlockingEdge row of the waiting parent was ever seen\n{runners.diag()}"
    )
    children = set(
        StateInvocation.objects.for_app(app.app_id)
        .filter(parent_invocation_id=parent_id)
        .values_list("invocation_id", flat=True)
    )
    assert len(children) == CHILDREN
    assert seen_waiting_on <= children, seen_waiting_on - children
    assert set(statuses(app, children).values()) == {SUCCESS}, describe(app, list(children))
    wait_until(
        lambda: not edges.exists(),
        30,
        lambda: f"blocking edges left after the parent finished: {list(edges.values())}",
    )
