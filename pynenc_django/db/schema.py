"""Whether pynenc's tables exist and are up to date on an alias: checked once where a
command starts (:func:`check_migrated`), and told from the database's own error anywhere
else (:func:`is_missing_schema`), so that no backend call pays for a check.
"""

from __future__ import annotations

from pynenc_django.exceptions import NotMigratedError

_PG_MISSING_SQLSTATES = {"42P01", "42703"}  # undefined_table, undefined_column
_MYSQL_MISSING_CODES = {1146, 1054}  # no such table, unknown column
_SQLITE_MISSING_TEXT = ("no such table", "no such column", "has no column named")


def is_missing_schema(exc: BaseException) -> bool:
    """True for a database error about a table or column that does not exist: what a
    database that never ran (all of) pynenc_django's migrations answers. Never transient."""
    from django.db import DatabaseError

    if not isinstance(exc, DatabaseError):
        return False
    cause = exc.__cause__ or exc
    sqlstate = (
        getattr(cause, "sqlstate", None)
        or getattr(cause, "pgcode", None)
        or getattr(getattr(cause, "diag", None), "sqlstate", None)
    )
    if sqlstate in _PG_MISSING_SQLSTATES:
        return True
    args = getattr(cause, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_MISSING_CODES
    text = str(exc).lower()
    return any(marker in text for marker in _SQLITE_MISSING_TEXT)


def not_migrated(alias: str, exc: BaseException) -> NotMigratedError:
    """The error to raise from ``exc`` (:func:`is_missing_schema`): the database's first
    line of it as the detail."""
    args: tuple[object, ...] = getattr(exc.__cause__ or exc, "args", ())
    text = str(args[1]) if len(args) > 1 and isinstance(args[0], int) else str(exc)  # MySQL
    return NotMigratedError(alias, (text.strip().splitlines() or [type(exc).__name__])[0])


def unapplied_migrations(alias: str) -> list[str]:
    """pynenc_django's migrations (and those they depend on) not applied on ``alias``."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[alias])
    targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] == "pynenc_django"]
    return [f"{m.app_label}.{m.name}" for m, _ in executor.migration_plan(targets)]


def check_migrated(alias: str) -> None:
    """Raise :class:`NotMigratedError` unless every pynenc_django migration is applied on
    ``alias``. Where a command starts: it loads the migration graph (tenths of a second)."""
    pending = unapplied_migrations(alias)
    if pending:
        more = f" and {len(pending) - 1} more" if len(pending) > 1 else ""
        raise NotMigratedError(alias, f"unapplied: {pending[0]}{more}")


def check_migrated_for_command(alias: str) -> None:
    """:func:`check_migrated` where a management command starts: a ``CommandError``, so
    the command exits 1 with the message and no traceback."""
    from django.core.management.base import CommandError

    try:
        check_migrated(alias)
    except NotMigratedError as exc:
        raise CommandError(str(exc)) from exc
