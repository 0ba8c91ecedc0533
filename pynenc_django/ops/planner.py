"""A first ``ANALYZE`` for PostgreSQL tables that have never had one.

Every pynenc table is keyed by ``app_id`` first, and with one app every row shares it.
Until a table has statistics, PostgreSQL takes ``app_id = ...`` for a selective condition
and may serve a lookup by ``(app_id, invocation_id)`` with any small index that merely
starts with ``app_id``, reading every row (every dead version too) on each status
change; a plan cached on a young table then stays for the connection's lifetime. One
``ANALYZE`` fixes that for good: ``app_id``'s single value does not go stale, and the
planner scales row counts by the table's actual size. Autovacuum runs it within a
minute of a new table's first writes; where it is off, or not there yet, the runner
parent runs it, once per table, and so does a process that claims, after its first
:attr:`FirstAnalyze.LOOK_EVERY_CLAIMS` claims: the parent's looks are seconds apart, and
a new deployment's first burst was claimed through such plans until then (measured in
the benchmark: a fresh database's first 2,000 single calls at 0.4-0.8 ms per claim
instead of 0.25, each one filtering every earlier invocation).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pynenc_django.db import get_connection
from pynenc_django.vendors import vendor_of

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("pynenc_django")

#: The tables every invocation writes: where a wrong plan costs a scan per status change.
HOT_TABLES = (
    "pynenc_invocation",
    "pynenc_broker_message",
    "pynenc_state_invocation",
    "pynenc_state_result",
    "pynenc_state_history",
)


class FirstAnalyze:
    """Runs ``ANALYZE`` on each hot table that has rows but has never been analyzed.

    Looks after ``INTERVAL`` seconds, then, while a look finds nothing to analyze (no work
    yet, or tables still under ``MIN_ROWS``), twice as long each time, up to ``EAGER_CAP``
    during the first ``EAGER_FOR`` seconds (a new deployment's burst of work) and up to
    ``LATE_INTERVAL`` after; a look that analyzed a table starts again from ``INTERVAL``.
    Stops for good once every hot table has been analyzed, by anyone. PostgreSQL only; one
    query per look, so an idle runner spends little on it. A process that claims also
    looks every :attr:`LOOK_EVERY_CLAIMS` claims (:meth:`claimed`) until then.
    """

    INTERVAL = 2.0
    EAGER_CAP = 10.0
    EAGER_FOR = 600.0
    LATE_INTERVAL = 60.0
    MIN_ROWS = 100
    LOOK_EVERY_CLAIMS = 100

    def __init__(self, alias: str, tables: tuple[str, ...] = HOT_TABLES) -> None:
        self.alias = alias
        self.tables = tables
        self.done = False
        self._claims = 0
        self._started = time.monotonic()
        self._next = 0.0
        self._interval = self.INTERVAL

    def tick(self) -> None:
        """Look if it is time; never raises for a database error (the next look retries)."""
        now = time.monotonic()
        if self.done or now < self._next:
            return
        if self._look():  # work has begun: other tables may cross MIN_ROWS soon
            self._interval = self.INTERVAL
        self._next = now + self._interval
        cap = self.EAGER_CAP if now - self._started < self.EAGER_FOR else self.LATE_INTERVAL
        self._interval = min(self._interval * 2, cap)

    def claimed(self, count: int = 1) -> None:
        """Count ``count`` claims; every :attr:`LOOK_EVERY_CLAIMS` of them, look now. Not
        inside a transaction: its ``ANALYZE`` would hold the table's lock until the end of
        it (a task's own ``atomic()``, say)."""
        if self.done:
            return
        self._claims += count
        if self._claims < self.LOOK_EVERY_CLAIMS:
            return
        self._claims = 0
        if not get_connection(self.alias).in_atomic_block:
            self._look()

    def _look(self) -> bool:
        """One look; whether it analyzed a table. Never raises for a database error."""
        connection = get_connection(self.alias)
        if not vendor_of(connection).analyzes_young_tables:
            self.done = True
            return False
        try:
            self.done, analyzed = self._analyze_new_tables(connection)
        except Exception as exc:  # a maintenance look must never stop the runner
            logger.warning("pynenc_django: could not look for unanalyzed tables: %s", exc)
            return False
        return analyzed

    def _analyze_new_tables(self, connection: BaseDatabaseWrapper) -> tuple[bool, bool]:
        """(every hot table has statistics, this look analyzed one)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relname, n_live_tup + n_dead_tup FROM pg_stat_user_tables "
                "WHERE relname = ANY(%s) AND schemaname = ANY(current_schemas(false)) "
                "AND last_analyze IS NULL AND last_autoanalyze IS NULL",
                [list(self.tables)],
            )
            pending = cursor.fetchall()
            analyzed = False
            for table, rows in pending:
                if rows >= self.MIN_ROWS:
                    logger.info("pynenc_django: ANALYZE %s (%d rows, never analyzed)", table, rows)
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
                    analyzed = True
        return not pending, analyzed
