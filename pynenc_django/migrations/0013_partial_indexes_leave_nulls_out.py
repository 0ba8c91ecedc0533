"""Six indexes over columns that most rows leave NULL hold only the rows with a value, where
the database has partial indexes (PostgreSQL, SQLite): ``NotNullIndex``.

A top-level call has no parent, no parent event and no workflow, so each new invocation
wrote four entries into ``pynenc_state_invocation``'s indexes that no query ever reads; an
invocation has no owner while REGISTERED and once final, and no purge time until final, so
its insert and every status change (never a HOT update: the status is indexed) wrote
entries for NULLs too. On the development machine the server's share of a ``parallelize``
of 2,000 fell by about a tenth.

MariaDB/MySQL has no partial indexes: there the indexes stay as they are and this migration
changes nothing in the database (Django's state still records the new definitions).

Upgrading a large database: on PostgreSQL and SQLite each index is dropped and built again
inside the migration's transaction, which blocks writes to its table meanwhile; the index
builds read the whole table.
"""

from typing import Any

from django.db import migrations

import pynenc_django.models.indexes


class WherePartialIndexes(migrations.SeparateDatabaseAndState):
    """``operations`` on Django's state everywhere, and on the database only where it has
    partial indexes: elsewhere the new definitions create what is already there."""

    def __init__(self, operations: list[Any]) -> None:
        super().__init__(database_operations=operations, state_operations=operations)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return self.__class__.__qualname__, [], {"operations": self.state_operations}

    def database_forwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.features.supports_partial_indexes:
            super().database_forwards(app_label, schema_editor, *args)

    def database_backwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.features.supports_partial_indexes:
            super().database_backwards(app_label, schema_editor, *args)

    def describe(self) -> str:
        return "Rebuild indexes to leave NULLs out, where the database has partial indexes"


def _rebuilt(model_name: str, name: str, fields: list[str], not_null: str) -> list[Any]:
    return [
        migrations.RemoveIndex(model_name=model_name, name=name),
        migrations.AddIndex(
            model_name=model_name,
            index=pynenc_django.models.indexes.NotNullIndex(
                fields=fields, name=name, not_null=not_null
            ),
        ),
    ]


class Migration(migrations.Migration):
    dependencies = [
        ("pynenc_django", "0012_registered_history_per_statement"),
    ]

    operations = [
        WherePartialIndexes(
            [
                *_rebuilt(
                    "invocation",
                    "pynenc_inv_owner_idx",
                    ["app_id", "status_runner_id", "status"],
                    "status_runner_id",
                ),
                *_rebuilt(
                    "invocation", "pynenc_inv_purge_idx", ["app_id", "auto_purge_at"], "auto_purge_at"
                ),
                *_rebuilt(
                    "stateinvocation",
                    "pynenc_state_inv_parent_idx",
                    ["app_id", "parent_invocation_id"],
                    "parent_invocation_id",
                ),
                *_rebuilt(
                    "stateinvocation",
                    "pynenc_state_inv_event_idx",
                    ["app_id", "parent_event_id"],
                    "parent_event_id",
                ),
                *_rebuilt(
                    "stateinvocation",
                    "pynenc_state_inv_wf_idx",
                    ["app_id", "workflow_id"],
                    "workflow_id",
                ),
                *_rebuilt(
                    "stateinvocation",
                    "pynenc_state_inv_wftype_idx",
                    ["app_id", "workflow_type_key"],
                    "workflow_type_key",
                ),
            ]
        ),
    ]
