"""Waking runners for a revoke request: a ``revoke(..., terminate=True)`` reaches the
runner whose worker runs the invocation at once, not at its next periodic look.

Announced as trigger work is (:mod:`.triggers`): ``NOTIFY`` on the app's revoke channel in
the transaction that records the request (PostgreSQL), the app's revoke signal file
touched after the commit elsewhere (SQLite; MariaDB/MySQL: processes on this host only).
Each runner looks on every loop iteration without waiting (:class:`RevokeWake`), and
reads the requests only when woken, or every ``django_heartbeat_interval_sec`` for what
no announcement reached (another host on MariaDB, ``django_listen_notify`` off).
"""

from __future__ import annotations

from pynenc_django.db import get_connection
from pynenc_django.utils import sha256_hex
from pynenc_django.vendors import vendor_of
from pynenc_django.wakeup.signals import notify_channel, signal_after_commit, signal_path
from pynenc_django.wakeup.triggers import TriggerWake


def revoke_channel(app_id: str) -> str:
    """The PostgreSQL channel announcing revoke requests for an app."""
    return f"{notify_channel(app_id)}_r"


def revoke_signal(app_id: str) -> str:
    """The signal file announcing revoke requests for an app."""
    return f"revoke-{sha256_hex(app_id)[:16]}"


def announce_revoke(alias: str, app_id: str) -> None:
    """Tell the runners of ``app_id`` to read the revoke requests once this transaction
    commits."""
    connection = get_connection(alias)
    if vendor_of(connection).notifies:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [revoke_channel(app_id)])
        return
    signal_after_commit(alias, signal_path(alias, revoke_signal(app_id)))


class RevokeWake(TriggerWake):
    """A runner's look for :func:`announce_revoke`, once per loop iteration: never
    blocks, costs no statement (a ``select`` on the ``LISTEN`` connection or on the
    inotify watch)."""

    def channel(self) -> str:
        return revoke_channel(self.app_id)

    def signal(self) -> str:
        return revoke_signal(self.app_id)
