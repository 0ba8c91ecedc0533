"""The announcements themselves: PostgreSQL's channels and ``LISTEN`` connections, and the
signal files (watched with Linux's inotify) of SQLite and of MariaDB/MySQL on one host."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import select
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynenc.invocation.status import InvocationStatus

from pynenc_django.db import get_connection
from pynenc_django.utils import from_db_time, sha256_hex
from pynenc_django.vendors import vendor_of

logger = logging.getLogger("pynenc_django")


def notify_channel(app_id: str) -> str:
    """The PostgreSQL channel for an app: a fixed-length, always-valid identifier."""
    return f"pynenc_{sha256_hex(app_id)[:24]}"


#: Channel on which PostgreSQL announces every invocation that reached a final status,
#: from the status trigger of migration 0003: no extra statement. Payload: its id before
#: migration 0011, then a :class:`FinalAnnouncement` (:func:`parse_final`).
FINAL_CHANNEL = "pynenc_final"


@dataclass(frozen=True, slots=True)
class FinalAnnouncement:
    """What a final-status announcement tells (migration 0011): the status record a
    waiting client would read next and, for a SUCCESS, the serialized result if small
    (``None``: read it)."""

    app_id: str
    status: InvocationStatus
    runner_id: str | None
    timestamp: datetime
    result: str | None


def parse_final(payload: str) -> tuple[str, FinalAnnouncement | None]:
    """The invocation id a ``pynenc_final`` payload announces, and what it tells beyond
    the id: ``None`` for a bare id (migration 0003's), or a payload not understood or not
    of a final status (then the waiting client reads the status, as for a bare id)."""
    if not payload.startswith("{"):
        return payload, None
    invocation_id = ""
    try:
        data = json.loads(payload)
        invocation_id = str(data["i"])
        status = InvocationStatus(data["s"])
        if not status.is_final():
            raise ValueError(f"{status.value} is not a final status")
        return invocation_id, FinalAnnouncement(
            app_id=data["a"],
            status=status,
            runner_id=data["r"],
            timestamp=from_db_time(datetime.fromisoformat(data["t"])),
            result=data.get("v"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("pynenc_django: a final-status announcement not understood (%s)", exc)
        return invocation_id, None


def listen_connection(alias: str, channel: str) -> Any:
    """A dedicated autocommit psycopg connection listening on ``channel``."""
    import psycopg

    params = dict(get_connection(alias).get_connection_params())
    for django_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    conn = psycopg.connect(**params, autocommit=True)
    conn.execute(f'LISTEN "{channel}"')
    return conn


def signal_path(alias: str, signal: str) -> str | None:
    """The file that ``signal`` touches: beside the database file on SQLite; on
    MariaDB/MySQL in this user's signal directory (:func:`signal_dir`), named after the
    server and database. ``None`` on PostgreSQL (it has ``NOTIFY``), for SQLite in memory
    (one process: nobody to signal), and where there is no safe directory."""
    connection = get_connection(alias)
    return vendor_of(connection).signal_path(connection, signal)


def signals_are_complete(alias: str) -> bool:
    """SQLite's signals reach every process using the database (one host by nature);
    MariaDB's only the processes on this host, so there they are hints that shorten a
    poll, never a reason to stop polling."""
    return vendor_of(get_connection(alias)).signals_reach_every_host


@functools.cache
def signal_dir() -> str | None:
    """``<tmp>/pynenc-django-<uid>``, private to this user (0700, ours, no symlink), where
    MariaDB/MySQL's signal files live; ``None`` if it cannot be made so."""
    import stat
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"pynenc-django-{os.getuid()}")
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        info = os.lstat(path)
    except OSError as exc:
        logger.info("pynenc_django: no signal directory %s (%s); polling only", path, exc)
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        logger.warning("pynenc_django: %s is not a private directory of ours; polling only", path)
        return None
    return path


def work_signal(app_id: str) -> str:
    """The signal of new queue messages for an app (cf. :func:`notify_channel`)."""
    return f"work-{sha256_hex(app_id)[:16]}"


def due_signal(app_id: str) -> str:
    """The signal of new delayed messages for an app (an earlier due time, maybe)."""
    return f"due-{sha256_hex(app_id)[:16]}"


#: The signal of final statuses, any app's (cf. :data:`FINAL_CHANNEL`).
FINAL_SIGNAL = "final"


def touch(path: str) -> None:
    """Signal ``path``'s waiters: a new modification time wakes their inotify watch."""
    try:
        os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            open(path, "a").close()  # noqa: SIM115 - create it; waiters watch it from now
    except OSError as exc:  # a signal only saves waiting: the safety poll still looks
        logger.debug("pynenc_django: cannot touch %s (%s)", path, exc)


def signal_after_commit(alias: str, path: str | None) -> None:
    """Touch ``path`` once the current transaction commits (at once outside one), so a
    woken waiter always finds what it was woken for."""
    if path is None:
        return
    from django.db import transaction

    transaction.on_commit(functools.partial(touch, path), using=alias)


# Linux inotify (<sys/inotify.h>): a file's content or attributes changed, or it went.
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_IGNORED = 0x400, 0x800, 0x8000
_IN_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_DELETE_SELF | _IN_MOVE_SELF
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1  # noqa: B018 - AttributeError where there is no inotify
    return libc


class FileWatch:
    """An inotify watch on one signal file (created if missing): :meth:`wait` returns
    True once it was touched since the last wait. Raises ``OSError`` (or
    ``AttributeError``) where inotify is unavailable; callers then poll instead."""

    def __init__(self, path: str, *more: str) -> None:
        self.path = path
        self.paths = (path, *more)
        #: The paths touched, as the waits that returned True saw (the caller clears it).
        self.touched: set[str] = set()
        self._by_wd: dict[int, str] = {}
        libc = _libc()
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        try:
            for watched in self.paths:
                self._watch(watched)
        except OSError:
            os.close(self.fd)
            raise

    def _watch(self, path: str) -> None:
        if not os.path.exists(path):
            touch(path)
        wd = _libc().inotify_add_watch(self.fd, os.fsencode(path), _IN_MASK)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {path}")
        self._by_wd[wd] = path

    def wait(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        gone: set[str] = set()
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.fd, 4096):  # drain: a burst wakes once
                offset = 0
                while offset + _EVENT.size <= len(data):
                    wd, mask, _, name_length = _EVENT.unpack_from(data, offset)
                    path = self._by_wd.get(wd, self.path)
                    self.touched.add(path)
                    if mask & _IN_IGNORED:
                        gone.add(path)
                    offset += _EVENT.size + name_length
        for path in gone:  # the file was removed or replaced: watch the new one
            with contextlib.suppress(OSError):
                self._watch(path)
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def file_watch(path: str | None, *more: str) -> FileWatch | None:
    """A :class:`FileWatch` on ``path`` (and ``more``), or ``None`` (no path, or no
    inotify here)."""
    if path is None:
        return None
    try:
        return FileWatch(path, *more)
    except (OSError, AttributeError) as exc:
        logger.info("pynenc_django: cannot watch %s (%s); polling instead", path, exc)
        return None
