"""MariaDB/MySQL: ``GET_LOCK`` named locks, ``INSERT IGNORE``/``ON DUPLICATE KEY``, and
history triggers only where the server allowed migration 0004 to install them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pynenc_django.vendors.base import Vendor

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import QuerySet

#: The triggers of migration 0004 (a copy: migrations are frozen history).
HISTORY_TRIGGERS = ("pynenc_inv_history_ins", "pynenc_inv_history_upd")


class MySQL(Vendor):
    name: ClassVar[str] = "mysql"
    limits_in_subqueries: ClassVar[bool] = False
    from_nothing: ClassVar[str] = " FROM DUAL"

    def records_history(self, alias: str) -> bool:
        """Binary logging without ``log_bin_trust_function_creators`` refuses triggers to
        a user without SUPER: migration 0004 then leaves them out."""
        from pynenc_django.db import get_connection

        with get_connection(alias).cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = "
                f"DATABASE() AND TRIGGER_NAME IN ({', '.join(['%s'] * len(HISTORY_TRIGGERS))})",
                list(HISTORY_TRIGGERS),
            )
            return int(cursor.fetchone()[0]) == len(HISTORY_TRIGGERS)

    def union_row_estimates(
        self, cursor: Any, union: str, params: Sequence[Any], parts: int
    ) -> list[int] | None:
        cursor.execute(f"EXPLAIN {union}", params)
        columns = [c[0] for c in cursor.description]
        selects = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        # One row per table read, numbered by the SELECT it belongs to.
        by_select: dict[int, int] = {}
        for row in selects:
            if row.get("id") is not None:
                by_select.setdefault(int(row["id"]), int(row.get("rows") or 0))
        return [by_select[k] for k in sorted(by_select)]

    def capped_count_sql(self, table: str, scope: str, cap: int, id_column: str) -> tuple[str, int]:
        """MariaDB's derived tables cannot refer to the outer query: the (cap + 1)-th
        row tells a long range, and only a short one is counted."""
        nth = f"SELECT m.{id_column} FROM {table} m WHERE {scope} LIMIT 1 OFFSET {cap}"
        count = f"SELECT COUNT(*) FROM {table} m WHERE {scope}"
        return f"CASE WHEN ({nth}) IS NOT NULL THEN {cap + 1} ELSE ({count}) END", 2

    def status_time_after_current(self) -> str:
        return "GREATEST(%s, status_timestamp + INTERVAL 1 MICROSECOND)"

    def conflict_clause(
        self, qn: Callable[[str], str], unique: Sequence[str], update: Sequence[str] | None
    ) -> tuple[str, str]:
        if update:
            return "INSERT", " ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{qn(c)} = VALUES({qn(c)})" for c in update
            )
        return "INSERT IGNORE", ""

    def lock_named(self, cursor: Any, key: bytes, timeout: int) -> str | None:
        """``GET_LOCK``: server-wide names of 64 characters at most, held by the session,
        so released after the transaction (:meth:`release_named`)."""
        from django.db import OperationalError

        name = f"pynenc:{key.hex()[:40]}"
        cursor.execute("SELECT GET_LOCK(%s, %s)", [name, timeout])
        if cursor.fetchone()[0] != 1:
            # 1205, lock wait timeout: a transient error, so the caller retries.
            raise OperationalError(1205, f"named lock {name!r} not free in time")
        return name

    def release_named(self, cursor: Any, name: str) -> None:
        cursor.execute("SELECT RELEASE_LOCK(%s)", [name])

    def distinct_values_sql(self, table: str, col: str, scope: str) -> tuple[str, int]:
        """MariaDB/MySQL skip through an index prefix themselves for ``DISTINCT``
        ("Using index for group-by")."""
        return (
            f"SELECT DISTINCT {col} FROM {table} WHERE {scope}{col} IS NOT NULL "
            f"ORDER BY {col} LIMIT %s",
            1,
        )

    def estimated_count(self, queryset: QuerySet[Any, Any]) -> int | None:
        from django.db import connections

        sql, params = queryset.values("pk").query.sql_with_params()
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(f"EXPLAIN {sql}", params)
            columns = [c[0] for c in cursor.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        return int(rows[0].get("rows") or 0) if rows else None

    def result_length_sql(self, column: str) -> str:
        return f"LENGTH({column})"

    def signal_path(self, connection: BaseDatabaseWrapper, signal: str) -> str | None:
        """In this user's private signal directory, named after the server and database:
        it reaches only this host's processes, so it is a hint within a poll."""
        from pynenc_django.utils import sha256_hex
        from pynenc_django.wakeup import signal_dir

        directory = signal_dir()
        if directory is None:
            return None
        settings = connection.settings_dict
        where = f"{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
        return os.path.join(directory, f"{sha256_hex(where)[:16]}-{signal}")
