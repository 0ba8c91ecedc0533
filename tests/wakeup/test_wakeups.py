"""Idle workers and waiting clients block on announcements instead of polling the database.

PostgreSQL: ``LISTEN``, woken by an enqueue's ``NOTIFY``. SQLite, which has no LISTEN/NOTIFY:
enqueues and final statuses touch signal files beside the database file after their commit,
watched with inotify. MariaDB/MySQL: the same signal files, in a private directory, end the
backoff's sleeps early (hints from this host; other hosts are found by polling). Where
none is possible, workers back off."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from pynenc import Pynenc
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from pynenc_django.orchestrator.claim import ClaimOptions
from pynenc_django.wakeup import (
    FINAL_SIGNAL,
    BackoffWaiter,
    FileSignalWaiter,
    FileWatch,
    PostgresListener,
    ResultWaiter,
    make_waiter,
    signal_dir,
    signal_path,
    work_signal,
)
from tests.orchestrator.test_statement_budget import counted

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="signal files are SQLite's notifications"
)
mysql_only = pytest.mark.skipif(
    connection.vendor != "mysql", reason="signal files are MariaDB/MySQL's hints"
)
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's"
)
WORKER = RunnerContext("DjangoPersistentProcessRunner", runner_id="signal-worker")
#: Far longer than any wake-up: a wait that returns before it was woken, not timed out.
LONG = 30.0


def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def app(app_instance_builder: Any) -> Iterator[Pynenc]:
    built = app_instance_builder.build()
    yield built
    built.purge()


def mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns if os.path.exists(path) else 0


def touch_later(path: str, delay: float) -> None:
    time.sleep(delay)
    os.utime(path)


@sqlite_only
def test_signal_files_sit_beside_the_database(app: Pynenc) -> None:
    path = signal_path("default", work_signal(app.app_id))
    assert path is not None
    assert path.startswith(str(connection.settings_dict["NAME"]) + "-pynenc-work-")


@sqlite_only
def test_an_enqueue_signals_after_its_commit(app: Pynenc) -> None:
    path = signal_path("default", work_signal(app.app_id))
    assert path is not None
    task = app.task(add)
    task(0, 0)
    with transaction.atomic():
        before = mtime(path)
        task(1, 2)
        time.sleep(0.01)
        assert mtime(path) == before, "not before the commit: a woken worker must find it"
    assert mtime(path) > before


@sqlite_only
def test_a_final_status_signals_and_other_statuses_do_not(app: Pynenc) -> None:
    path = signal_path("default", FINAL_SIGNAL)
    assert path is not None
    invocation = app.task(add)(1, 2)
    [claimed] = list(app.orchestrator.get_invocations_to_run(1, WORKER))
    before = mtime(path)
    app.orchestrator.set_invocation_status(claimed.invocation_id, InvocationStatus.RUNNING, WORKER)
    assert mtime(path) == before
    time.sleep(0.01)
    app.orchestrator.set_invocation_status(claimed.invocation_id, InvocationStatus.FAILED, WORKER)
    assert mtime(path) > before
    assert invocation.status == InvocationStatus.FAILED


def test_a_watch_wakes_on_a_touch_from_another_process(tmp_path: Any) -> None:
    path = str(tmp_path / "signal")
    watch = FileWatch(path)
    try:
        assert watch.wait(0.05) is False, "nothing touched it"
        proc = multiprocessing.get_context("spawn").Process(target=touch_later, args=(path, 0.2))
        proc.start()
        started = time.monotonic()
        assert watch.wait(LONG) is True
        assert time.monotonic() - started < LONG / 2
        proc.join(30)
        assert watch.wait(0.05) is False, "one touch wakes once"
        os.remove(path)  # replaced (a new database): the watch follows the new file
        open(path, "a").close()
        assert watch.wait(1.0) is True
        os.utime(path)
        assert watch.wait(1.0) is True
    finally:
        watch.close()


def waiter_for(app: Pynenc, listen: bool) -> Any:
    return make_waiter(
        "default",
        app.app_id,
        threading.Event(),
        min_wait=0.01,
        max_wait=LONG,
        notified_max_wait=LONG,
        listen=listen,
    )


def wakes_at_an_enqueue(app: Pynenc, waiter: Any) -> None:
    """An idle ``waiter`` returns soon after an enqueue, and costs no statement waiting."""
    waiter.start()
    try:
        assert waiter.notified
        timer = threading.Timer(0.2, lambda: app.task(add)(1, 2))
        timer.start()
        started = time.monotonic()
        with counted() as statements:
            waiter.wait()
        assert time.monotonic() - started < LONG / 2, "woken by the enqueue"
        timer.join()
        assert statements == [], "waiting costs no statement"
    finally:
        waiter.close()
    assert not waiter.notified


@sqlite_only
def test_an_idle_worker_waits_on_its_signal_and_wakes_at_an_enqueue(app: Pynenc) -> None:
    waiter = waiter_for(app, listen=True)
    assert isinstance(waiter, FileSignalWaiter)
    wakes_at_an_enqueue(app, waiter)


@pytest.mark.skipif(
    connection.vendor == "postgresql", reason="PostgreSQL's clients LISTEN (filter_final tests)"
)
def test_a_waiting_client_is_woken_by_a_final_status(app: Pynenc) -> None:
    """SQLite: the wait lasts until a final status is signalled. MariaDB: a sleep of the
    backoff (here one as long as the test) is ended by this host's signal."""
    invocation = app.task(add)(1, 2)
    waiter = ResultWaiter("default", max_wait=LONG, listen=True)
    try:
        waiter.wait([invocation.invocation_id])  # first: starts watching, returns to look
        [claimed] = list(app.orchestrator.get_invocations_to_run(1, WORKER))
        timer = threading.Timer(0.2, claimed.run, args=(WORKER,))
        timer.start()
        started = time.monotonic()
        if connection.vendor == "sqlite":
            waiter.wait([invocation.invocation_id])
        else:
            assert waiter._wait_signalled(False, LONG)
        assert time.monotonic() - started < LONG / 2, "woken by the final status"
        timer.join()
        assert invocation.result == 3
    finally:
        waiter.close()


@postgresql_only
def test_an_idle_worker_listens_and_wakes_at_an_enqueue(app: Pynenc) -> None:
    waiter = waiter_for(app, listen=True)
    assert isinstance(waiter, PostgresListener)
    wakes_at_an_enqueue(app, waiter)


@postgresql_only
def test_the_stop_event_ends_a_listening_wait(app: Pynenc) -> None:
    waiter = waiter_for(app, listen=True)
    waiter.start()
    try:
        threading.Timer(0.2, waiter.stop_event.set).start()
        started = time.monotonic()
        waiter.wait()
        assert time.monotonic() - started < LONG / 2
    finally:
        waiter.close()


def test_without_notifications_a_worker_backs_off(app: Pynenc) -> None:
    waiter = waiter_for(app, listen=False)
    assert isinstance(waiter, BackoffWaiter) and not waiter.notified


@mysql_only
def test_mariadb_signal_files_are_in_a_private_directory(app: Pynenc) -> None:
    import stat

    path = signal_path("default", work_signal(app.app_id))
    directory = signal_dir()
    assert path is not None and directory is not None
    assert os.path.dirname(path) == directory
    info = os.lstat(directory)
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert path.endswith(f"-{work_signal(app.app_id)}")
    assert signal_path("default", FINAL_SIGNAL) != path


@pytest.mark.parametrize("kind", ["shared", "symlink"])
def test_no_signal_directory_that_others_could_use(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Signal files are opened by name: in a directory another user could write to (or a
    symlink planted there), that user could make us touch their files. Then: no signals."""
    import tempfile

    target = tmp_path / f"pynenc-django-{os.getuid()}"
    if kind == "shared":
        target.mkdir()
        target.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        target.symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    signal_dir.cache_clear()
    try:
        assert signal_dir() is None
    finally:
        signal_dir.cache_clear()


@mysql_only
def test_a_mariadb_worker_is_hinted_by_an_enqueue_but_keeps_polling(app: Pynenc) -> None:
    """A local enqueue ends the sleep at once; without one the worker still looks after
    its backoff step (enqueues from other hosts touch nothing here)."""
    waiter = waiter_for(app, listen=True)
    assert isinstance(waiter, FileSignalWaiter)
    waiter.start()
    try:
        assert waiter.wakes and not waiter.notified, "hints, not a promise"
        timer = threading.Timer(0.2, lambda: app.task(add)(1, 2))
        timer.start()
        started = time.monotonic()
        with counted() as statements:
            waiter.wait()  # its first step is min_wait (0.01 s): a timeout, no hint yet
            assert not waiter.woken
            while not waiter.woken and time.monotonic() - started < LONG / 2:
                waiter.wait()  # doubling steps, ended by the enqueue's touch
        timer.join()
        assert waiter.woken and time.monotonic() - started < LONG / 2
        assert statements == [], "waiting costs no statement"
    finally:
        waiter.close()

    short = make_waiter(
        "default",
        app.app_id,
        threading.Event(),
        min_wait=0.05,
        max_wait=0.05,
        notified_max_wait=LONG,
        listen=True,
    )
    short.start()
    try:
        started = time.monotonic()
        short.wait()
        assert time.monotonic() - started < LONG / 2, "the backoff's step, not the safety poll"
        assert not short.woken
    finally:
        short.close()


@mysql_only
def test_a_claim_woken_for_work_skips_its_look(app: Pynenc) -> None:
    """The pop's head tells the queue's length itself: a worker just woken for new work
    pops at once; the only message taken is known to be the last."""
    orchestrator: Any = app.orchestrator
    task = app.task(add)
    looks = "SELECT (SELECT count(*) FROM (SELECT 1 FROM"  # broker.look: length and due time
    for announced in (False, True):
        task(1, 2)
        with counted() as statements:
            found = orchestrator.claim(WORKER, ClaimOptions(work_announced=announced))
        [claimed] = found.invocations
        assert any(sql.startswith(looks) for sql in statements) is not announced, statements
        assert found.claimed_the_last_message is True
        claimed.run(WORKER)
    task(1, 2), task(2, 3)
    found = orchestrator.claim(WORKER, ClaimOptions(work_announced=True))
    assert found.claimed_the_last_message is False, "one more is queued"
