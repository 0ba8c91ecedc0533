"""A task that waits for other tasks never deadlocks its runner.

Real ``manage.py pynenc_runner`` processes with too few workers for every waiting task
to have one of its own: a waiting worker must run, inside its wait, what it waits for
(``tests/project/jobs/waits.py``). Checked from the tasks' own records (which process ran
what, nested in which wait, how often) and from the invocations' histories.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pynenc import Pynenc

from tests.runner.conftest import (
    SUCCESS,
    Runners,
    assert_success_exactly_once,
    describe,
    killed_then_rerouted,
    statuses,
    wait_all_success,
    wait_until,
)


@pytest.fixture
def waits(app: Pynenc) -> ModuleType:
    from tests.project.jobs import waits as module

    return module


@dataclass(frozen=True)
class Record:
    label: str
    event: str
    pid: int
    at: float


def records(path: Path) -> list[Record]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        label, event, pid, at = line.split()
        found.append(Record(label, event, int(pid), float(at)))
    return found


def starts(path: Path) -> Counter[str]:
    return Counter(r.label for r in records(path) if r.event == "start")


def result_within(app: Pynenc, runners: Runners, invocation: Any, timeout: float) -> Any:
    """The invocation's result, failing (not hanging) if it is not final in time."""
    wait_all_success(app, [invocation.invocation_id], timeout, runners.diag)
    return invocation.result


def tasks_invocations(app: Pynenc) -> list[str]:
    """The app's invocations but pynenc's own (the recovery services' runs)."""
    from pynenc_django.models import Invocation

    return list(
        Invocation.objects.for_app(app.app_id)
        .exclude(task_id_key__startswith="pynenc.core_tasks.")
        .values_list("invocation_id", flat=True)
    )


def all_succeed_exactly_once(app: Pynenc, runners: Runners, timeout: float) -> list[str]:
    """Every invocation of the test's tasks ends SUCCESS, with one SUCCESS in its history."""
    everything = tasks_invocations(app)
    wait_all_success(app, everything, timeout, runners.diag)
    everything = tasks_invocations(app)  # none was added meanwhile
    assert set(statuses(app, everything).values()) == {SUCCESS}
    assert_success_exactly_once(app, everything, runners.diag())
    return everything


def assert_nested(path: Path, parent: str, children: list[str]) -> None:
    """Each child ran once, in the parent's process, between the parent's start and end."""
    found = {(r.label, r.event): r for r in records(path)}
    outer_start, outer_end = found[parent, "start"], found[parent, "finish"]
    for child in children:
        start, end = found[child, "start"], found[child, "finish"]
        assert start.pid == outer_start.pid == outer_end.pid, records(path)
        assert outer_start.at <= start.at <= end.at <= outer_end.at, records(path)


def test_a_parent_waiting_one_child_at_a_time_on_one_process(
    app: Pynenc, waits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """The issue's first case: ``parent(3)`` on ``--processes 1`` never returned."""
    record = tmp_path / "records.log"
    runners.start(processes=1)
    parent = waits.parent_one_by_one(3, str(record))
    assert result_within(app, runners, parent, 60) == 0 + 2 + 4
    everything = all_succeed_exactly_once(app, runners, 30)
    assert len(everything) == 4
    assert_nested(record, "parent", ["double-0", "double-1", "double-2"])
    assert set(starts(record).values()) == {1}


def test_a_parent_waiting_for_a_group_on_one_process(
    app: Pynenc, waits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    record = tmp_path / "records.log"
    runners.start(processes=1)
    parent = waits.parent_group(5, "g", str(record))
    assert result_within(app, runners, parent, 60) == sum(2 * i for i in range(5))
    all_succeed_exactly_once(app, runners, 30)
    assert_nested(record, "parent-g", [f"double-{i}" for i in range(5)])


def test_an_async_parent_awaiting_sync_and_async_children_on_one_process(
    app: Pynenc, waits: ModuleType, runners: Runners
) -> None:
    runners.start(processes=1)
    parent = waits.parent_async(3)
    assert result_within(app, runners, parent, 60) == 2 * sum(2 * i for i in range(3))
    assert len(all_succeed_exactly_once(app, runners, 30)) == 7


def test_a_tree_six_levels_deep_on_one_process(
    app: Pynenc, waits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """Fan-out 3 at every level: 1,093 invocations, up to 7 nested in one worker's waits."""
    record = tmp_path / "records.log"
    runners.start(processes=1)
    root = waits.tree(6, 3, "r", str(record))
    assert result_within(app, runners, root, 600) == 3**6
    everything = all_succeed_exactly_once(app, runners, 60)
    assert len(everything) == sum(3**level for level in range(7))
    assert set(starts(record).values()) == {1}, starts(record).most_common(3)
    assert len({r.pid for r in records(record)}) == 1  # one worker did it all


def test_a_parent_submitting_a_group_bigger_than_a_pipeline_piece_from_its_worker(
    app: Pynenc, waits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """The parent's ``parallelize`` of 600 children is sent in pipelined pieces on
    PostgreSQL (``PIPELINE_CALLS``), from a worker, on the task code's connection: every
    child is stored, runs once, and the parent gets their results. (Elsewhere a chunk is
    one statement per table, as from a client: ``test_batch_submit``.)"""
    from django.db import connection

    from pynenc_django.orchestrator.registration import PIPELINE_CALLS

    if connection.vendor != "postgresql":
        pytest.skip("pipelined pieces are PostgreSQL's (psycopg 3)")

    n = 600
    assert n > 2 * PIPELINE_CALLS
    record = tmp_path / "records.log"
    runners.start(processes=2)
    parent = waits.parent_group(n, "big", str(record))
    assert result_within(app, runners, parent, 180) == sum(2 * i for i in range(n))
    everything = all_succeed_exactly_once(app, runners, 60)
    assert len(everything) == n + 1
    counts = starts(record)
    assert counts == Counter({"parent-big": 1, **{f"double-{i}": 1 for i in range(n)}})


def test_a_hundred_parents_of_ten_children_on_two_processes(
    app: Pynenc, waits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    record = tmp_path / "records.log"
    runners.start(processes=2)
    parents = waits.parent_group.parallelize([(10, str(k), str(record)) for k in range(100)])
    ids = [invocation.invocation_id for invocation in parents.invocations]
    wait_all_success(app, ids, 600, runners.diag)
    assert list(parents.results) == [sum(2 * i for i in range(10))] * 100
    everything = all_succeed_exactly_once(app, runners, 60)
    assert len(everything) == 100 * 11
    counts = starts(record)
    assert len(counts) == 100 + 10  # parents' labels, and double-0..9 (ten per parent)
    assert {counts[f"parent-{k}"] for k in range(100)} == {1}
    assert {counts[f"double-{i}"] for i in range(10)} == {100}


def test_sigkill_of_a_worker_running_an_awaited_child_in_its_wait(
    app: Pynenc, waits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """The worker dies with the parent and its nested child RUNNING: the runner puts both
    back, and both run again to SUCCESS (the parent with a new child)."""
    record = tmp_path / "records.log"
    runner = runners.start(processes=1)
    parent = waits.parent_one_by_one(2, str(record), 2.0)
    first = wait_until(
        lambda: next((r for r in records(record) if r.label == "double-0"), None),
        30,
        lambda: f"the child never started\n{runners.diag()}",
    )
    parent_start = next(r for r in records(record) if r.label == "parent")
    assert first.pid == parent_start.pid  # nested in the parent's wait
    os.kill(first.pid, signal.SIGKILL)
    runner.wait_for_log(rf"worker:\S+ pid:{first.pid} exited with code -9", 30)

    assert result_within(app, runners, parent, 90) == 0 + 2
    everything = all_succeed_exactly_once(app, runners, 60)
    # The first parent run's two children (the killed one ran again) and the second's two.
    assert len(everything) == 1 + 2 + 2, describe(app, everything)
    killed = [r for r in records(record) if r.pid == first.pid]
    assert [(r.label, r.event) for r in killed] == [
        ("parent", "start"),
        ("double-0", "start"),
    ]
    assert starts(record)["parent"] == 2


def test_sigterm_reroutes_the_whole_stack_of_a_waiting_worker(
    app: Pynenc, waits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    """SIGTERM (no grace) while a child runs nested in its parent's wait: the worker puts
    both back (KILLED, REROUTED), and a new runner runs them to SUCCESS."""
    record = tmp_path / "records.log"
    runner = runners.start(processes=1)
    parent = waits.parent_one_by_one(2, str(record), 3.0)
    wait_until(
        lambda: any(r.label == "double-0" for r in records(record)),
        30,
        lambda: f"the child never started\n{runners.diag()}",
    )
    child = next(
        i
        for i in tasks_invocations(app)
        if i != parent.invocation_id and statuses(app, [i])[i] == "running"
    )
    runner.send(signal.SIGTERM)
    assert runner.wait_exit(30) == 0, runner.tail()
    for invocation_id in (parent.invocation_id, child):
        assert killed_then_rerouted(app, invocation_id), describe(app, [invocation_id])

    runners.start(processes=1, name="runner-again")
    assert result_within(app, runners, parent, 90) == 0 + 2
    all_succeed_exactly_once(app, runners, 60)


def test_sigterm_with_grace_lets_a_waiting_parent_and_its_children_finish(
    app: Pynenc, waits: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    record = tmp_path / "records.log"
    runner = runners.start(processes=1, env={"PYNENC__DJANGO_SHUTDOWN_GRACE_SEC": "20"})
    parent = waits.parent_one_by_one(3, str(record), 0.5)
    wait_until(
        lambda: any(r.label == "double-0" for r in records(record)),
        30,
        lambda: f"the child never started\n{runners.diag()}",
    )
    runner.send(signal.SIGTERM)
    assert runner.wait_exit(30) == 0, runner.tail()
    assert statuses(app, [parent.invocation_id]) == {parent.invocation_id: SUCCESS}, describe(
        app, tasks_invocations(app)
    )
    assert parent.result == 0 + 2 + 4
    all_succeed_exactly_once(app, runners, 5)
    assert_nested(record, "parent", ["double-0", "double-1", "double-2"])
