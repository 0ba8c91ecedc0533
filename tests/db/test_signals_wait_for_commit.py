"""No signal handler runs inside one of our write transactions (pynenc_django.interrupts).

pynenc's ``PersistentProcessRunner`` terminates its workers from its SIGTERM handler and
waits for each to put its invocation back. When the signal landed while the runner's main
thread was inside a write transaction (its heartbeats, its atomic services), the workers
waited for that transaction's lock, the runner waited for the workers, and each was
killed after 5 s with its invocation still RUNNING: pynenc's own conformance test
``test_runner_reroutes_on_real_os_signal`` failed one run in eight on SQLite that way.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
from django.db import connection
from pynenc import Pynenc

from pynenc_django.db import retry_transient, write_transaction
from pynenc_django.models import RunnerHeartbeat
from tests import racers

RUNNER = "signalled-runner"


@contextmanager
def handler(signum: int, on_signal: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    previous = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def test_a_handler_that_waits_for_another_writer_does_not_deadlock(app_instance: Pynenc) -> None:
    """The handler does what pynenc's runner does on SIGTERM: it starts a process that
    writes the row this process's transaction has written, and waits for it."""
    app = app_instance
    app.orchestrator.register_runner_heartbeats([RUNNER])
    ctx = multiprocessing.get_context("spawn")
    seen: list[tuple[bool, int | None]] = []

    def stop_workers(signum: int, frame: FrameType | None) -> None:
        results = ctx.Queue()
        worker = ctx.Process(target=racers.beat, args=(app.app_id, RUNNER, results))
        worker.start()
        worker.join(timeout=20)
        if worker.is_alive():  # waiting for our lock: what the runner's 5 s join hit
            worker.kill()
            worker.join()
        seen.append((connection.in_atomic_block, worker.exitcode))

    with handler(signal.SIGTERM, stop_workers):
        with write_transaction(app.orchestrator.db_alias):
            app.orchestrator.register_runner_heartbeats([RUNNER])  # this row is ours now
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []  # held while the transaction is open
            app.orchestrator.register_runner_heartbeats([RUNNER])
        assert seen == [(False, 0)]  # ran once, after COMMIT; its writer finished
    assert RunnerHeartbeat.objects.filter(app_id=app.app_id, runner_id=RUNNER).count() == 1


def test_ctrl_c_lets_the_transaction_commit_then_interrupts(app_instance: Pynenc) -> None:
    app = app_instance
    with handler(signal.SIGINT, signal.default_int_handler):
        with pytest.raises(KeyboardInterrupt), write_transaction(app.orchestrator.db_alias):
            os.kill(os.getpid(), signal.SIGINT)
            app.orchestrator.register_runner_heartbeats([RUNNER])
        assert not connection.in_atomic_block
    assert RunnerHeartbeat.objects.filter(app_id=app.app_id, runner_id=RUNNER).exists()


def test_signals_arriving_together_are_all_delivered_in_order(app_instance: Pynenc) -> None:
    received: list[int] = []
    alias = app_instance.orchestrator.db_alias

    def term(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    def hup(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    with handler(signal.SIGTERM, term), handler(signal.SIGHUP, hup):
        with write_transaction(alias):
            with write_transaction(alias):  # nested: the outermost block delivers
                os.kill(os.getpid(), signal.SIGHUP)
            assert received == []
            os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGHUP, signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)  # outside a block: handled at once, as before
        assert received == [signal.SIGHUP, signal.SIGTERM, signal.SIGTERM]


def test_other_threads_leave_the_handlers_alone(app_instance: Pynenc) -> None:
    """Only the main thread runs handlers, and only it may install them."""
    mine = signal.getsignal(signal.SIGTERM)
    during: list[Any] = []

    def other() -> None:
        with write_transaction(app_instance.orchestrator.db_alias):
            during.append(signal.getsignal(signal.SIGTERM))
            app_instance.orchestrator.register_runner_heartbeats([RUNNER])

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert during == [mine]


class _Backend:
    """The least a :func:`retry_transient` method needs of its backend."""

    def __init__(self, alias: str) -> None:
        self.db_alias = alias
        self.transient_retries = 0
        self.seen_during: list[int] = []

    @retry_transient
    def read(self, received: list[int]) -> int:
        from django.db import connections

        os.kill(os.getpid(), signal.SIGTERM)
        with connections[self.db_alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            self.seen_during = list(received)
            return int(cursor.fetchone()[0])


def test_a_backend_call_outside_any_transaction_is_not_interrupted(app_instance: Pynenc) -> None:
    """pynenc's ThreadRunner puts its invocations back from its SIGTERM handler, on the
    connection of the statement the signal interrupted (MariaDB: "Commands out of sync")."""
    received: list[int] = []
    backend = _Backend(app_instance.orchestrator.db_alias)
    with handler(signal.SIGTERM, lambda signum, frame: received.append(signum)):
        assert backend.read(received) == 1
        assert backend.seen_during == []  # held while the statement ran
        assert received == [signal.SIGTERM]  # then delivered
