"""PostgreSQL's announcement of a final status (``pynenc_final``, migration 0003) carries what
a waiting client reads next: the status record and, for a SUCCESS, a small result. The
client then needs no read after it is woken, one round trip of the few a short task's
``.result`` costs (:mod:`pynenc_django.wakeup.results`).

The payload is a JSON object: ``a`` app id, ``i`` invocation id, ``s`` status, ``r`` its
runner, ``t`` the status timestamp, ``v`` the serialized result when it fits (NOTIFY takes
under 8,000 bytes; a larger one is read as before). Clients of an earlier version, which
expect the bare id, see no announcement for their invocations while both run: they find
their results by their backoff's looks (``invocation_wait_results_sleep_time_sec`` late at
most) until they are upgraded. Reversed, the bare id again.
"""

from django.db import migrations

# Migration 0003's, copied: a migration never imports another (frozen history).
HISTORY_COLUMNS = (
    "app_id, invocation_id, timestamp, status, status_runner_id, status_timestamp, "
    "runner_context_id, registered_by_inv_id"
)
FINAL = "('concurrency_controlled_final', 'failed', 'success')"
_VALUES = (
    "NEW.app_id, NEW.invocation_id, NEW.status_timestamp, NEW.status, "
    "NEW.status_runner_id, NEW.status_timestamp, NEW.status_context_id, "
)

#: Bytes of a result that may go into the payload (its JSON escaping may grow it; the
#: payload is checked whole below), and of the payload, under NOTIFY's 8,000.
RESULT_MAX_BYTES = 4000
PAYLOAD_MAX_BYTES = 7900


def _function(announcement: str, declare: str = "") -> str:
    """The status trigger's function of migration 0003, with ``announcement``."""
    return f"""CREATE OR REPLACE FUNCTION pynenc_invocation_status_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    {declare}BEGIN
        IF NEW.status_context_id IS NOT NULL THEN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO pynenc_state_history ({HISTORY_COLUMNS})
                VALUES ({_VALUES}NEW.registered_by_inv_id) ON CONFLICT DO NOTHING;
            ELSIF NEW.status_timestamp IS DISTINCT FROM OLD.status_timestamp THEN
                INSERT INTO pynenc_state_history ({HISTORY_COLUMNS})
                VALUES ({_VALUES}NULL) ON CONFLICT DO NOTHING;
            END IF;
        END IF;
        IF TG_OP = 'UPDATE' AND NEW.status IN {FINAL} AND OLD.status NOT IN {FINAL} THEN
            DELETE FROM pynenc_blocking_edge
            WHERE app_id = NEW.app_id AND waited_id = NEW.invocation_id;
            {announcement}
        END IF;
        RETURN NULL;
    END
    $$"""


_RECORD = (
    "'a', NEW.app_id, 'i', NEW.invocation_id, 's', NEW.status, "
    "'r', NEW.status_runner_id, 't', NEW.status_timestamp"
)
# The result row is written by the same statement as SUCCESS (a CTE of the transition):
# an AFTER trigger fires at the statement's end and sees it.
WITH_RECORD = _function(
    f"""payload := json_build_object({_RECORD}, 'v', CASE WHEN NEW.status = 'success' THEN
                (SELECT r.result FROM pynenc_state_result r WHERE r.app_id = NEW.app_id
                 AND r.invocation_id = NEW.invocation_id
                 AND octet_length(r.result) <= {RESULT_MAX_BYTES}) END)::text;
            IF octet_length(payload) > {PAYLOAD_MAX_BYTES} THEN
                payload := json_build_object({_RECORD})::text;
            END IF;
            PERFORM pg_notify('pynenc_final', payload);""",
    declare="DECLARE payload text;\n    ",
)
BARE_ID = _function("PERFORM pg_notify('pynenc_final', NEW.invocation_id);")


def _replace(schema_editor, sql: str) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(sql, params=None)


def install(apps, schema_editor) -> None:
    _replace(schema_editor, WITH_RECORD)


def remove(apps, schema_editor) -> None:
    _replace(schema_editor, BARE_ID)


class Migration(migrations.Migration):
    dependencies = [
        ("pynenc_django", "0010_oldest_waits_and_message_lookup_indexes"),
    ]

    operations = [migrations.RunPython(install, remove)]
