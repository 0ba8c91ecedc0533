"""Transactions that serialise writers on every database.

:func:`write_transaction` opens ``BEGIN IMMEDIATE`` on SQLite whatever the project's
``transaction_mode``, so a read-validate-write never deadlocks on a lock upgrade;
PostgreSQL and MariaDB rely on row locks and conditional updates inside a normal
transaction, and :func:`named_locks` where a check and its write touch different rows.
No signal handler runs inside either (:mod:`pynenc_django.interrupts`).
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pynenc_django.db.connections import get_connection
from pynenc_django.interrupts import signals_deferred
from pynenc_django.vendors import vendor_of

if TYPE_CHECKING:
    pass

logger = logging.getLogger("pynenc_django")


@contextmanager
def write_transaction(alias: str) -> Iterator[None]:
    """An ``atomic()`` block that takes the write lock up front on SQLite.

    SQLite's default ``BEGIN DEFERRED`` lets two connections read the same row and then
    fail to upgrade to a write lock ("database is locked", with no busy wait). Forcing
    ``BEGIN IMMEDIATE`` for our own outermost blocks makes every read-validate-write
    serialise cleanly, independent of the project's ``transaction_mode`` option.
    Signal handlers wait for the block to end (:mod:`pynenc_django.interrupts`).
    """
    with signals_deferred(), _atomic_writing(alias):
        yield


@contextmanager
def _atomic_writing(alias: str) -> Iterator[None]:
    from django.db import transaction

    connection = get_connection(alias)
    if not vendor_of(connection).locks_at_begin or connection.in_atomic_block:
        with transaction.atomic(using=alias):
            yield
        return
    # Connect first: Django resets ``transaction_mode`` from OPTIONS when it (re)connects,
    # which would silently turn our BEGIN IMMEDIATE back into a deferred BEGIN.
    connection.ensure_connection()
    # SQLite's DatabaseWrapper.transaction_mode (Django 5.1+) is missing from django-stubs.
    previous = getattr(connection, "transaction_mode", None)
    connection.transaction_mode = "IMMEDIATE"  # type: ignore[attr-defined]
    try:
        atomic = transaction.atomic(using=alias)
        atomic.__enter__()
    finally:
        connection.transaction_mode = previous  # type: ignore[attr-defined]
    try:
        yield
    except BaseException:
        atomic.__exit__(*sys.exc_info())  # rolls back; Atomic never swallows the exception
        raise
    else:
        atomic.__exit__(None, None, None)


#: How long a MariaDB/MySQL named lock is waited for before the claim is retried.
NAMED_LOCK_TIMEOUT_SEC = 10


@contextmanager
def named_locks(alias: str, app_id: str) -> Iterator[Callable[[str], None]]:
    """Yield ``lock(name)``: an exclusive lock on ``name`` (per app and database), held
    until the transaction it is taken in has ended, committed or not.

    Enter it *outside* that transaction (``with named_locks(...) as lock,
    write_transaction(...)``). A check-then-write such as pynenc's concurrency control
    ("nothing of this key is PENDING, so make this one PENDING") touches different rows
    in its read and its write, so row locks cannot serialise it: two READ COMMITTED
    transactions would both see nothing and both write. Holding the key's lock across
    both, and past the commit, makes the next holder's read see the previous write.

    PostgreSQL: ``pg_advisory_xact_lock`` (released by the transaction's end). MariaDB/
    MySQL: ``GET_LOCK``, released here after the transaction ended (its session ending
    releases it too). SQLite: nothing, since ``BEGIN IMMEDIATE`` serialises every writer.
    """
    connection = get_connection(alias)
    vendor = vendor_of(connection)
    taken: list[str] = []

    def lock(name: str) -> None:
        if not vendor.needs_named_locks:
            return
        key = f"{connection.settings_dict['NAME']}\0{app_id}\0{name}".encode()
        with connection.cursor() as cursor:
            held = vendor.lock_named(cursor, hashlib.sha256(key).digest(), NAMED_LOCK_TIMEOUT_SEC)
        if held is not None:
            taken.append(held)

    with signals_deferred():  # no handler runs while a key is locked
        try:
            yield lock
        finally:
            for held in taken:
                try:
                    with connection.cursor() as cursor:
                        vendor.release_named(cursor, held)
                except Exception as exc:  # a lost session has released it already
                    logger.debug("pynenc_django: could not release %s: %s", held, exc)
