"""What pynenc's own suites need to run against our backends, and nothing of our making."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest
from _pytest.monkeypatch import MonkeyPatch
from pynenc.runner.multi_thread_runner import MultiThreadRunner


def _remove_shared_state_once_manager_may_be_gone(self: MultiThreadRunner, key: str) -> None:
    """pynenc 0.4's ``_safe_remove_shared_state``, tolerant of every closed-socket error.

    Several of pynenc's tests run ``runner.run()`` in a thread and call
    ``stop_runner_loop()`` from the test's own thread. Both threads then terminate the
    workers: the test's thread removes each worker's entry from the manager's dict, while
    the loop thread, once it sees ``running`` false, shuts the manager down. pynenc
    catches the ``EOFError``/``BrokenPipeError`` this race usually gives, but not the
    ``ConnectionResetError`` a manager gives when it closes with the request unread
    (CI, stop 23: ``test_single_run[Django MultiThread Json]``). A deployment runs the
    loop and the signal handler on one thread and never meets it; it concerns no backend.
    """
    try:
        self.shared_status.pop(key, None)
    except (EOFError, ConnectionError):
        self.logger.debug(f"Manager already stopped while removing state for worker:{key}")


@pytest.fixture(autouse=True)
def _multi_thread_runner_shutdown_race_tolerated(
    monkeypatch: MonkeyPatch,
) -> Generator[None, None, None]:
    monkeypatch.setattr(
        MultiThreadRunner,
        "_safe_remove_shared_state",
        _remove_shared_state_once_manager_may_be_gone,
    )
    yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "timed: pynenc's own slow tests, which compare timings taken in the test; CI runs "
        "them first, one database at a time, never beside other test sessions",
    )


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """pynenc marks ``slow`` tests that time themselves against each other ("the client
    data store speeds up task start": cached within 1.5 times uncached): beside the other
    databases' sessions (CI runs those side by side), the machine's load, not the backend,
    decides them. They are ``timed`` too, and ``.ci/run`` runs them apart, first."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here) and item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.timed)
