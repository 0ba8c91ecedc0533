"""MariaDB/MySQL get migration 0003's triggers too, where the server allows them.

With binary logging on, creating a trigger needs SUPER (or
``log_bin_trust_function_creators``), which managed servers rarely grant. There this
migration installs nothing and says so; the orchestrator then keeps writing the history
and releasing waiters itself, in the transaction of the status change (it looks for
these triggers once per process: ``DjangoOrchestrator.history_by_database``).
"""

import logging

from django.db import DatabaseError, migrations

logger = logging.getLogger("pynenc_django")

# The columns and values of 0003's triggers, as they were (a migration is frozen history:
# it imports neither runtime code nor another migration).
HISTORY_COLUMNS = (
    "app_id, invocation_id, timestamp, status, status_runner_id, status_timestamp, "
    "runner_context_id, registered_by_inv_id"
)
FINAL = "('concurrency_controlled_final', 'failed', 'success')"


def _values(registered_by: str) -> str:
    return (
        "NEW.app_id, NEW.invocation_id, NEW.status_timestamp, NEW.status, "
        "NEW.status_runner_id, NEW.status_timestamp, NEW.status_context_id, " + registered_by
    )


MYSQL_TRIGGERS = ("pynenc_inv_history_ins", "pynenc_inv_history_upd")

MYSQL_INSTALL = [
    f"""CREATE TRIGGER pynenc_inv_history_ins AFTER INSERT ON pynenc_invocation
    FOR EACH ROW BEGIN
        IF NEW.status_context_id IS NOT NULL THEN
            INSERT IGNORE INTO pynenc_state_history ({HISTORY_COLUMNS})
            VALUES ({_values("NEW.registered_by_inv_id")});
        END IF;
    END""",
    f"""CREATE TRIGGER pynenc_inv_history_upd AFTER UPDATE ON pynenc_invocation
    FOR EACH ROW BEGIN
        IF NEW.status_context_id IS NOT NULL
                AND NOT (NEW.status_timestamp <=> OLD.status_timestamp) THEN
            INSERT IGNORE INTO pynenc_state_history ({HISTORY_COLUMNS})
            VALUES ({_values("NULL")});
        END IF;
        IF NEW.status IN {FINAL} AND OLD.status NOT IN {FINAL} THEN
            DELETE FROM pynenc_blocking_edge
            WHERE app_id = NEW.app_id AND waited_id = NEW.invocation_id;
        END IF;
    END""",
]
MYSQL_REMOVE = [f"DROP TRIGGER IF EXISTS {name}" for name in MYSQL_TRIGGERS]

# ER_BINLOG_CREATE_ROUTINE_NEED_SUPER, ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED
_NOT_ALLOWED = {1419, 1227, 1142}


def install(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "mysql":
        return
    try:
        for sql in MYSQL_INSTALL:
            schema_editor.execute(sql, params=None)
    except DatabaseError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code not in _NOT_ALLOWED:
            raise
        remove(apps, schema_editor)  # all or nothing
        logger.warning(
            "pynenc_django: this server does not allow triggers (%s); pynenc's history "
            "will be written by the orchestrator, one statement more per status change",
            exc,
        )


def remove(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "mysql":
        return
    for sql in MYSQL_REMOVE:
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    atomic = False  # MySQL's DDL cannot run in a transaction

    dependencies = [
        ("pynenc_django", "0003_status_history_triggers"),
    ]

    operations = [migrations.RunPython(install, remove)]
