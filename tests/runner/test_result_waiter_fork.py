"""A process that waited for a result, then forks (a management command handing work to
``multiprocessing``, a server that forks after import): the child waits on a ``LISTEN``
connection of its own. Sharing the parent's socket, the two would read each other's
messages, and the child closing it would end the parent's session."""

from __future__ import annotations

import os
import warnings
from types import ModuleType

import pytest
from django.db import connection, connections

from pynenc_django.wakeup import close_result_waiters, current_result_waiter
from tests.runner.conftest import Runners


def _child(tasks: ModuleType, parent_backend: int, told: int) -> None:
    """The forked child's part: wait for a result, report, close its waiters, exit."""
    try:
        value = tasks.add(2, 3).result
        waiter = current_result_waiter("default")
        backend = waiter._conn.info.backend_pid if waiter is not None and waiter._conn else None
        close_result_waiters()  # as a child's clean shutdown would
        os.write(told, f"{value} {backend != parent_backend}".encode())
    except BaseException as exc:  # reported to the parent, which fails the test
        os.write(told, repr(exc).encode()[:500])
    finally:
        os._exit(0)


def test_a_forked_child_waits_on_a_subscription_of_its_own(
    tasks: ModuleType, runners: Runners
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("results are announced on PostgreSQL only")
    runners.start(processes=2)
    assert tasks.add(1, 1).result == 2  # subscribed
    waiter = current_result_waiter("default")
    assert waiter is not None and waiter._conn is not None
    backend, epoch = waiter._conn.info.backend_pid, waiter.epoch
    connections.close_all()  # Django's own connections: closed before a fork, as Django asks

    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        pid = os.fork()
    if pid == 0:
        _child(tasks, backend, write_end)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as told:
        assert told.read().decode() == "5 True"

    assert tasks.add(4, 5).result == 9
    assert waiter._conn is not None
    assert (waiter._conn.info.backend_pid, waiter.epoch) == (backend, epoch), "parent's kept"
