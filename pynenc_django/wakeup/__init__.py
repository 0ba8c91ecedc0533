"""How an idle worker waits for new work without polling the database in a loop.

pynenc's own persistent workers re-query the broker as fast as they can when it is empty
(about 1,200 statements per second each on SQLite). Ours wait instead:

* **PostgreSQL**: the broker sends ``NOTIFY`` on the app's channel in the transaction that
  enqueues, and each worker ``LISTEN``\\s on a dedicated autocommit connection. A worker
  wakes within milliseconds of a commit; otherwise it only polls every
  ``notified_max_wait`` seconds, a safety net for work enqueued with notifications off.
* **SQLite** (one host by nature): whoever commits an enqueue or a final status touches
  a signal file beside the database file (:func:`signal_after_commit`), and waiters block
  on it with Linux's inotify: woken within a millisecond, no statement and no CPU while
  idle, the same ``notified_max_wait`` safety poll. Elsewhere (no inotify, a database in
  memory) it falls back to the backoff below.
* **MariaDB/MySQL** (no notifications): exponential backoff from the runner's loop sleep
  up to ``max_wait``, reset whenever work is found; the same signal files (in a private
  directory, :func:`signal_dir`) end a sleep early when the enqueue or the final status
  came from a process of this user on this host. Processes on other hosts are never
  waited for longer than the backoff: a signal is a hint there, not a promise.
* PostgreSQL behind a transaction-mode pooler (``django_listen_notify = False``): the
  backoff alone.

Where every enqueue is announced (PostgreSQL, SQLite), a runner listens once for all its
workers and wakes one idle worker per announcement (:mod:`.dispatch`).

Both wait on the runner's stop event, so a stop request interrupts an idle wait at once.

Modules: :mod:`.signals` (channels, ``LISTEN`` connections, signal files), :mod:`.work`
(an idle worker's wait), :mod:`.dispatch` (a runner's wake-ups for its workers) and
:mod:`.results` (a client's wait for results).
"""

from __future__ import annotations

from pynenc_django.wakeup.dispatch import Announcer, DispatchedWaiter, WakeShared, dispatchable
from pynenc_django.wakeup.results import (
    ResultWaiter,
    close_result_waiters,
    current_result_waiter,
    result_waiter,
)
from pynenc_django.wakeup.signals import (
    FINAL_CHANNEL,
    FINAL_SIGNAL,
    FileWatch,
    due_signal,
    file_watch,
    listen_connection,
    notify_channel,
    signal_after_commit,
    signal_dir,
    signal_path,
    signals_are_complete,
    touch,
    work_signal,
)
from pynenc_django.wakeup.work import (
    DUE_PAYLOAD,
    BackoffWaiter,
    FileSignalWaiter,
    PostgresListener,
    Waiter,
    make_waiter,
)

__all__ = [
    "DUE_PAYLOAD",
    "FINAL_CHANNEL",
    "FINAL_SIGNAL",
    "Announcer",
    "BackoffWaiter",
    "DispatchedWaiter",
    "FileSignalWaiter",
    "FileWatch",
    "PostgresListener",
    "ResultWaiter",
    "WakeShared",
    "Waiter",
    "close_result_waiters",
    "current_result_waiter",
    "dispatchable",
    "due_signal",
    "file_watch",
    "listen_connection",
    "make_waiter",
    "notify_channel",
    "result_waiter",
    "signal_after_commit",
    "signal_dir",
    "signal_path",
    "signals_are_complete",
    "touch",
    "work_signal",
]
