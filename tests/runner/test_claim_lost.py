"""A claim lost in flight: committed on the server, its outcome lost with the connection.

The runner reaches the database through :class:`tests.faults.FaultProxy`, which lets the
claim of one invocation commit, then drops the server's answer, cuts every connection and
refuses new ones for a few seconds, as a server restart would. The worker never learns that
it owns the invocation (PENDING on MariaDB; RUNNING on PostgreSQL, whose claim is one
statement), and nobody else may take it: the worker's heartbeat stays fresh. It must put it
back itself once the database answers again. The shared servers are never stopped.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest
from pynenc import Pynenc

from tests.faults import FaultProxy
from tests.runner.conftest import (
    KILLED,
    PENDING,
    REROUTED,
    RUNNING,
    SUCCESS,
    RunnerProcess,
    Runners,
    assert_success_exactly_once,
    history,
    wait_all_success,
)

# "Server down" for 3 s: the claim's retry fails and the worker backs off. For 0 s: the
# retry inside ``retry_transient`` reconnects at once and succeeds, so the lost claim is
# known only from the process's count of lost connections.
DOWN_FOR = {"down-3s": 3.0, "back-at-once": 0.0}
RUN_AFTER_BACK_LIMIT_SEC = 20.0  # the worker's database backoff is 5 s at most


@pytest.fixture
def proxy() -> Generator[FaultProxy, None, None]:
    import os

    from django.db import connection

    if connection.vendor not in ("postgresql", "mysql"):
        pytest.skip("needs a database server to cut connections to (SQLite has none)")
    settings = connection.settings_dict
    faults = FaultProxy((settings["HOST"] or "127.0.0.1", int(settings["PORT"])), connection.vendor)
    faults.database_url = faults.url(os.environ["DATABASE_URL"])  # type: ignore[attr-defined]
    yield faults
    faults.close()


def run_behind(
    proxy: FaultProxy, runners: Runners, cut: Any, down_for: float, what: str
) -> tuple[RunnerProcess, datetime, datetime]:
    """A one-worker runner whose database is behind ``proxy``; waits until ``cut`` fired
    and the proxy serves again. Returns the runner and when the cut and the return were."""
    runner = runners.start(
        processes=1,
        env={"DATABASE_URL": proxy.database_url},  # type: ignore[attr-defined]
        name="behind-proxy",
    )
    assert cut.fired.wait(60), f"{what} was never cut\n{runners.diag()}"
    assert cut.back.wait(down_for + 10), "the proxy never served again"
    assert cut.fired_at is not None and cut.back_at is not None
    return (
        runner,
        datetime.fromtimestamp(cut.fired_at, UTC),
        datetime.fromtimestamp(cut.back_at, UTC),
    )


@pytest.mark.parametrize("down_for", list(DOWN_FOR.values()), ids=list(DOWN_FOR))
def test_claim_lost_in_flight_runs_within_seconds_after_the_database_is_back(
    app: Pynenc, tasks: ModuleType, runners: Runners, proxy: FaultProxy, tag: str, down_for: float
) -> None:
    # Queued before any runner exists, so its id is known before anything can claim it.
    invocation = tasks.sleep_task(0.2, tag)
    invocation_id = invocation.invocation_id
    runner, fired_at, back_at = run_behind(
        proxy, runners, proxy.cut_claim(invocation_id, down_for), down_for, "the claim"
    )

    # The claim had committed when the connection was cut: the invocation was the
    # worker's, and no message of it was left in the queue.
    claimed = [e for e in history(app, invocation_id) if e.timestamp <= fired_at]
    claimed_statuses = [e.status for e in claimed]
    assert PENDING in claimed_statuses, (
        f"the claim had not committed before the cut: {claimed_statuses}\n{runners.diag()}"
    )
    worker = next(e.runner_id for e in claimed if e.status == PENDING)

    wait_all_success(app, [invocation_id], RUN_AFTER_BACK_LIMIT_SEC + down_for + 30, runners.diag)
    assert_success_exactly_once(app, [invocation_id], runners.diag())
    assert invocation.result == tag

    trail = history(app, invocation_id)
    rerun = next(e for e in trail if e.status == RUNNING and e.timestamp > back_at)
    success = next(e for e in trail if e.status == SUCCESS)
    rerun_after = (rerun.timestamp - back_at).total_seconds()
    print(
        f"claim lost in flight: running again {rerun_after:.2f}s after the database was back "
        f"(down {down_for:g}s), SUCCESS after {(success.timestamp - back_at).total_seconds():.2f}s"
    )
    retried = (
        "the claim's error was raised"
        if "database unavailable" in runner.log()
        else ("retried silently, counted")
    )
    print(f"  ({retried})")
    assert rerun_after < RUN_AFTER_BACK_LIMIT_SEC, f"{rerun_after:.1f}s\n{runners.diag()}"

    # Put back by the worker that owned it (KILLED as its owner, then REROUTED), not by
    # pynenc's PENDING/RUNNING recovery services.
    after_cut = [e for e in trail if e.timestamp > fired_at]
    statuses_after = [e.status for e in after_cut]
    assert statuses_after[:2] == [KILLED, REROUTED], (statuses_after, runners.diag())
    assert not any(s.endswith("_recovery") for s in (e.status for e in trail)), trail
    assert runner.wait_for_log(f"worker:{worker} owns invocation:{invocation_id} but runs nothing")


@pytest.mark.parametrize("down_for", list(DOWN_FOR.values()), ids=list(DOWN_FOR))
def test_running_write_lost_in_flight_is_put_back(
    app: Pynenc, tasks: ModuleType, runners: Runners, proxy: FaultProxy, tag: str, down_for: float
) -> None:
    """MariaDB: RUNNING is a statement of its own (PostgreSQL's claim writes it). Committed,
    then its answer lost: the retry is refused (already RUNNING) and pynenc gives up on the
    invocation, which stays RUNNING, the live worker's. The worker saw the lost connection,
    so it looks before its next claim and puts the invocation back."""
    if proxy.protocol != "mysql":
        pytest.skip("PostgreSQL's claim makes the invocation RUNNING (the claim tests cover it)")
    invocation = tasks.sleep_task(0.2, tag)
    invocation_id = invocation.invocation_id
    cut = proxy.cut_status_write(invocation_id, RUNNING, down_for)
    _, fired_at, back_at = run_behind(proxy, runners, cut, down_for, "the RUNNING write")
    before = [e.status for e in history(app, invocation_id) if e.timestamp <= fired_at]
    assert RUNNING in before, (before, runners.diag())

    wait_all_success(app, [invocation_id], RUN_AFTER_BACK_LIMIT_SEC + down_for + 30, runners.diag)
    assert_success_exactly_once(app, [invocation_id], runners.diag())
    assert invocation.result == tag
    trail = history(app, invocation_id)
    rerun = next(e for e in trail if e.status == RUNNING and e.timestamp > back_at)
    rerun_after = (rerun.timestamp - back_at).total_seconds()
    print(f"RUNNING lost in flight: running again {rerun_after:.2f}s after the database was back")
    assert rerun_after < RUN_AFTER_BACK_LIMIT_SEC, f"{rerun_after:.1f}s\n{runners.diag()}"
    after_cut = [e.status for e in trail if e.timestamp > fired_at]
    assert after_cut[:2] == [KILLED, REROUTED], (after_cut, runners.diag())
