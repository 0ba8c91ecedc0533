"""SQLite: one writer at a time (``BEGIN IMMEDIATE``), signal files beside the database."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from pynenc_django.vendors.base import Vendor

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper


class SQLite(Vendor):
    name: ClassVar[str] = "sqlite"
    locks_at_begin: ClassVar[bool] = True
    needs_named_locks: ClassVar[bool] = False
    # The database is a file of this host: its signal files reach every process using it.
    signals_reach_every_host: ClassVar[bool] = True
    is_server: ClassVar[bool] = False

    def status_time_after_current(self) -> str:
        """Times are text (``YYYY-MM-DD HH:MM:SS[.ffffff]``, naive UTC), which sort as they
        compare; one microsecond is added to the stored one's fraction (a stored fraction
        of .999999 wraps within its second: a race on that very microsecond keeps the
        caller's time)."""
        return (
            "MAX(%s, substr(status_timestamp, 1, 19) || '.' || substr(printf('%%06d', "
            "CAST(substr(status_timestamp || '.000000', 21, 6) AS INTEGER) + 1), -6, 6))"
        )

    def inserts_rows_one_by_one(self) -> bool:
        """One prepared single-row INSERT stepped per row costs SQLite what a many-row
        VALUES list does. A tracer (``set_trace_callback``) is handed the expanded text of
        the whole statement at each statement and each row's trigger, which for a
        many-row INSERT grows with the square of its rows."""
        return True

    def deletes_returning(self) -> bool:
        """From SQLite 3.35 (MariaDB refuses the subquery on the same table)."""
        from sqlite3 import sqlite_version_info  # the module Django's SQLite backend uses

        return sqlite_version_info >= (3, 35)

    def signal_path(self, connection: BaseDatabaseWrapper, signal: str) -> str | None:
        """Beside the database file; none in memory (one process: nobody to signal)."""
        if cast("SQLiteWrapper", connection).is_in_memory_db():
            return None
        name = str(connection.settings_dict["NAME"])
        if name.startswith("file:"):
            name = name.removeprefix("file:").split("?", 1)[0]
        return f"{name}-pynenc-{signal}"
