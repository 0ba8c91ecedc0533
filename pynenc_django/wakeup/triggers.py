"""Waking the trigger loop: an event or a watched status reaches its trigger at once.

The atomic services run once per ``django_atomic_service_every_sec`` (1 s) cluster-wide;
work for them between two turns (a valid condition recorded by ``emit_event`` or by a
status change a trigger watches) is announced so that runners take a turn now:

* **PostgreSQL**: ``NOTIFY`` on the app's trigger channel, in the transaction that records
  the condition; each runner ``LISTEN``\\s on one connection and looks (without waiting)
  on every loop iteration.
* **SQLite** and **MariaDB/MySQL**: the app's trigger signal file is touched after the
  commit; each runner watches it with inotify (MariaDB: processes on this host only; the
  others find the work at their next turn, within a second).
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from typing import Any

from pynenc_django.db import get_connection
from pynenc_django.utils import sha256_hex
from pynenc_django.vendors import vendor_of
from pynenc_django.wakeup.signals import (
    FileWatch,
    file_watch,
    listen_connection,
    notify_channel,
    signal_after_commit,
    signal_path,
)

logger = logging.getLogger("pynenc_django")

#: After a failed ``LISTEN``, how long a runner goes by its turns alone before trying again.
RETRY_LISTEN_SEC = 5.0


def trigger_channel(app_id: str) -> str:
    """The PostgreSQL channel announcing trigger work for an app."""
    return f"{notify_channel(app_id)}_t"


def trigger_signal(app_id: str) -> str:
    """The signal file announcing trigger work for an app."""
    return f"trigger-{sha256_hex(app_id)[:16]}"


def announce_trigger_work(alias: str, app_id: str) -> None:
    """Tell the runners there is work for the trigger loop once this transaction commits."""
    connection = get_connection(alias)
    if vendor_of(connection).notifies:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [trigger_channel(app_id)])
        return
    signal_after_commit(alias, signal_path(alias, trigger_signal(app_id)))


class TriggerWake:
    """A runner's look for :func:`announce_trigger_work`, once per loop iteration: never
    blocks. Where it cannot listen or watch, it never says woken (turns still come)."""

    def __init__(self, alias: str, app_id: str, enabled: bool = True) -> None:
        self.alias = alias
        self.app_id = app_id
        #: ``django_listen_notify`` off (a transaction-mode pooler): turns only.
        self.enabled = enabled
        self._conn: Any = None
        self._watch: FileWatch | None = None
        self._started = False
        self._retry_at = 0.0

    def _start(self) -> None:
        if time.monotonic() < self._retry_at:
            return
        self._started = True
        if vendor_of(get_connection(self.alias)).notifies:
            import psycopg

            try:
                self._conn = listen_connection(self.alias, self.channel())
            except psycopg.Error as exc:
                logger.warning("pynenc_django: cannot LISTEN on %s (%s)", self.channel(), exc)
                self._started = False
                self._retry_at = time.monotonic() + RETRY_LISTEN_SEC
            return
        self._watch = file_watch(signal_path(self.alias, self.signal()))

    def channel(self) -> str:
        """The PostgreSQL channel listened to (a subclass's announcements: its own)."""
        return trigger_channel(self.app_id)

    def signal(self) -> str:
        """The signal file watched elsewhere."""
        return trigger_signal(self.app_id)

    def woken(self) -> bool:
        """Whether trigger work was announced since the last look."""
        if not self.enabled:
            return False
        if not self._started:
            self._start()
        if self._watch is not None:
            return self._watch.wait(0.0)
        if self._conn is None:
            return False
        import psycopg

        try:
            ready, _, _ = select.select([self._conn.fileno()], [], [], 0)
            if not ready:
                return False
            return bool(list(self._conn.notifies(timeout=0.0)))
        except (psycopg.Error, OSError) as exc:
            logger.warning(
                "pynenc_django: lost the LISTEN connection of %s (%s)", self.channel(), exc
            )
            self.close()
            self._started = False  # listen again, at most every RETRY_LISTEN_SEC
            self._retry_at = time.monotonic() + RETRY_LISTEN_SEC
            return True  # something may have been announced meanwhile: look now

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
