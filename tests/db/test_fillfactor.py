"""The tables every invocation writes keep a tenth of each page free on PostgreSQL
(migration 0014): a new row no longer lands in whichever old page has a few bytes left."""

from __future__ import annotations

import pytest
from django.db import connection

WRITTEN_PER_INVOCATION = (
    "pynenc_invocation",
    "pynenc_state_invocation",
    "pynenc_state_history",
    "pynenc_state_result",
)


def test_the_tables_every_invocation_writes_keep_a_tenth_free() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL storage parameter")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r'",
            [list(WRITTEN_PER_INVOCATION)],
        )
        options = dict(cursor.fetchall())
    assert options == {table: ["fillfactor=90"] for table in WRITTEN_PER_INVOCATION}
