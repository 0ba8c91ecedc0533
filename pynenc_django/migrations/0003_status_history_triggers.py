"""The database records every status change in the state history, and releases the
waiters of an invocation that becomes final, in the statement that changes the status.
On PostgreSQL it also announces each final status on the ``pynenc_final`` channel
(payload: the invocation id), which clients waiting for a result ``LISTEN`` to.

PostgreSQL and SQLite only. MariaDB/MySQL refuse ``CREATE TRIGGER`` without SUPER when
binary logging is on (the default on managed servers), so there the orchestrator keeps
writing both itself (see ``DjangoOrchestrator.history_by_database``).

A row whose ``status_context_id`` is NULL (inserted by anything but the orchestrator,
e.g. ``pynenc_seed``) gets no history from the triggers; its writer records its own.
"""

from django.db import migrations, models

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


SQLITE_INSTALL = [
    f"""CREATE TRIGGER pynenc_inv_history_ins AFTER INSERT ON pynenc_invocation
    WHEN NEW.status_context_id IS NOT NULL
    BEGIN
        INSERT OR IGNORE INTO pynenc_state_history ({HISTORY_COLUMNS})
        VALUES ({_values("NEW.registered_by_inv_id")});
    END""",
    f"""CREATE TRIGGER pynenc_inv_history_upd AFTER UPDATE OF status, status_timestamp
    ON pynenc_invocation
    WHEN NEW.status_context_id IS NOT NULL AND NEW.status_timestamp IS NOT OLD.status_timestamp
    BEGIN
        INSERT OR IGNORE INTO pynenc_state_history ({HISTORY_COLUMNS})
        VALUES ({_values("NULL")});
    END""",
    f"""CREATE TRIGGER pynenc_inv_release_waiters AFTER UPDATE OF status ON pynenc_invocation
    WHEN NEW.status IN {FINAL} AND OLD.status NOT IN {FINAL}
    BEGIN
        DELETE FROM pynenc_blocking_edge
        WHERE app_id = NEW.app_id AND waited_id = NEW.invocation_id;
    END""",
]
SQLITE_REMOVE = [
    "DROP TRIGGER IF EXISTS pynenc_inv_history_ins",
    "DROP TRIGGER IF EXISTS pynenc_inv_history_upd",
    "DROP TRIGGER IF EXISTS pynenc_inv_release_waiters",
]

POSTGRESQL_INSTALL = [
    f"""CREATE OR REPLACE FUNCTION pynenc_invocation_status_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status_context_id IS NOT NULL THEN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO pynenc_state_history ({HISTORY_COLUMNS})
                VALUES ({_values("NEW.registered_by_inv_id")}) ON CONFLICT DO NOTHING;
            ELSIF NEW.status_timestamp IS DISTINCT FROM OLD.status_timestamp THEN
                INSERT INTO pynenc_state_history ({HISTORY_COLUMNS})
                VALUES ({_values("NULL")}) ON CONFLICT DO NOTHING;
            END IF;
        END IF;
        IF TG_OP = 'UPDATE' AND NEW.status IN {FINAL} AND OLD.status NOT IN {FINAL} THEN
            DELETE FROM pynenc_blocking_edge
            WHERE app_id = NEW.app_id AND waited_id = NEW.invocation_id;
            PERFORM pg_notify('pynenc_final', NEW.invocation_id);
        END IF;
        RETURN NULL;
    END
    $$""",
    """CREATE TRIGGER pynenc_invocation_status_changed
    AFTER INSERT OR UPDATE OF status, status_timestamp ON pynenc_invocation
    FOR EACH ROW EXECUTE FUNCTION pynenc_invocation_status_changed()""",
]
POSTGRESQL_REMOVE = [
    "DROP TRIGGER IF EXISTS pynenc_invocation_status_changed ON pynenc_invocation",
    "DROP FUNCTION IF EXISTS pynenc_invocation_status_changed()",
]

STATEMENTS = {
    "sqlite": (SQLITE_INSTALL, SQLITE_REMOVE),
    "postgresql": (POSTGRESQL_INSTALL, POSTGRESQL_REMOVE),
}


def _run(schema_editor, index: int) -> None:
    for sql in STATEMENTS.get(schema_editor.connection.vendor, ([], []))[index]:
        schema_editor.execute(sql, params=None)


def install(apps, schema_editor) -> None:
    _run(schema_editor, 0)


def remove(apps, schema_editor) -> None:
    _run(schema_editor, 1)


class Migration(migrations.Migration):
    dependencies = [
        ("pynenc_django", "0002_trigger_verbose_names"),
    ]

    operations = [
        migrations.AddField(
            model_name="invocation",
            name="status_context_id",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AddField(
            model_name="invocation",
            name="registered_by_inv_id",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.RunPython(install, remove),
    ]
