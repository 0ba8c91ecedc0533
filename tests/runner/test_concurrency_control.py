"""pynenc's running concurrency control holds between the workers of real runners.

Four worker processes claim invocations of tasks under ``running_concurrency`` (KEYS over
five accounts, ARGUMENTS, and TASK), with and without ``reroute_on_concurrency_control``,
all submitted at once. The tasks record each execution themselves (wall-clock start and
end, pid: ``tests/project/guarded/tasks.py``), and the test checks from those records
that no two executions of one key (one task, for TASK) ever overlapped, while executions
of different keys did run side by side (so the workers really raced).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from types import ModuleType

import pytest
from pynenc import Pynenc

from tests.runner.conftest import (
    SUCCESS,
    Runners,
    assert_success_exactly_once,
    describe,
    statuses,
    success_counts,
    wait_until,
)

ACCOUNTS = [f"acc{k}" for k in range(5)]
SECONDS = 0.01  # long enough to overlap when unguarded, short enough for 400 executions
CC_FINAL = "concurrency_controlled_final"


@pytest.fixture
def guarded(app: Pynenc) -> ModuleType:
    from tests.project.guarded import tasks as module

    return module


def executions(record_dir: Path) -> list[tuple[str, str, float, float, int]]:
    found = []
    for path in record_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            task, key, start, end, pid = line.split()
            found.append((task, key, float(start), float(end), int(pid)))
    return found


def overlaps(records: list[tuple[str, str, float, float, int]]) -> list[str]:
    """Pairs of executions of the same (task, key) whose time intervals intersect."""
    by_key: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
    for task, key, start, end, pid in records:
        by_key[task, key].append((start, end, pid))
    found = []
    for (task, key), runs in by_key.items():
        for (s1, e1, p1), (s2, e2, p2) in pairwise(sorted(runs)):
            if s2 < e1:
                found.append(
                    f"{task} {key}: pid {p1} {s1:.6f}-{e1:.6f} and pid {p2} {s2:.6f}-{e2:.6f}"
                )
    return found


@pytest.mark.slow
def test_running_concurrency_holds_across_four_workers(
    app: Pynenc, guarded: ModuleType, runners: Runners, tmp_path: Path
) -> None:
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    runners.start(processes=4)
    where = str(record_dir)

    rerouted = [
        *(
            guarded.by_key(ACCOUNTS[i % len(ACCOUNTS)], i, SECONDS, where).invocation_id
            for i in range(200)
        ),
        *(guarded.whole_task(i, SECONDS, where).invocation_id for i in range(40)),
        *(
            guarded.same_arguments(ACCOUNTS[i % len(ACCOUNTS)], SECONDS, where).invocation_id
            for i in range(50)
        ),
    ]
    dropped = [
        *(
            guarded.by_key_or_drop(ACCOUNTS[i % len(ACCOUNTS)], i, SECONDS, where).invocation_id
            for i in range(100)
        ),
        *(guarded.whole_task_or_drop(i, SECONDS, where).invocation_id for i in range(40)),
    ]

    def settled() -> bool:
        current = statuses(app, rerouted + dropped)
        return all(current.get(i) == SUCCESS for i in rerouted) and all(
            current.get(i) in (SUCCESS, CC_FINAL) for i in dropped
        )

    wait_until(
        settled,
        240,
        lambda: f"not settled:\n{describe(app, [*rerouted, *dropped][:20])}\n{runners.diag()}",
        interval=0.5,
    )
    records = executions(record_dir)

    assert not overlaps(records), "\n".join(overlaps(records)[:20])

    assert_success_exactly_once(app, rerouted, runners.diag())
    ran = defaultdict(int)
    for task, *_ in records:
        ran[task] += 1
    assert (ran["by_key"], ran["whole_task"], ran["same_arguments"]) == (200, 40, 50), dict(ran)
    succeeded = sum(success_counts(app, dropped).values())
    assert ran["by_key_or_drop"] + ran["whole_task_or_drop"] == succeeded, dict(ran)
    final = statuses(app, dropped)
    assert CC_FINAL in final.values(), "no invocation was held back: the workers never raced"

    # The guarantee is not bought by running one at a time: different keys overlapped,
    # on different worker processes.
    by_time = sorted((r for r in records if r[0] == "by_key"), key=lambda r: r[2])
    side_by_side = sum(
        1 for a, b in pairwise(by_time) if b[2] < a[3] and a[1] != b[1] and a[4] != b[4]
    )
    assert side_by_side > 0, "no two keys ever ran at once: the test proved nothing"
    assert len({pid for *_, pid in records}) >= 2
