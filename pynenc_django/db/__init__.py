"""Database plumbing shared by every Django backend, one module per concern.

pynenc imports every plugin module at every ``Pynenc()``, in processes that may never
have configured Django, and tolerates only ``ImportError``: backends reach Django through
:func:`ensure_django` on first use, never at import.

* ``connections``: Django set up lazily; connections across threads, forks, event loops.
* ``retry``: transient errors retried (:func:`retry_transient`), database errors told apart.
* ``transactions``: writers serialised on every database (:func:`write_transaction`,
  :func:`named_locks`).
* ``statements``: hot-path SQL, prepared and gathered (:func:`insert_rows`,
  :func:`one_statement`, :func:`pipelined`).
* ``backend``: :class:`DjangoBackendMixin`, what every backend shares.

What differs per database is asked of :mod:`pynenc_django.vendors`, never tested here.
"""

from __future__ import annotations

from pynenc_django.db.backend import DjangoBackendMixin
from pynenc_django.db.connections import (
    DjangoNotConfiguredError,
    close_when_thread_ends,
    ensure_django,
    fork_guard,
    get_connection,
    in_event_loop,
)
from pynenc_django.db.retry import (
    is_connection_lost,
    is_database_error,
    is_transient,
    retry_transient,
)
from pynenc_django.db.statements import (
    NEVER_BY_COUNT,
    STATEMENT_CHARS,
    STATEMENT_ROWS,
    StatementPart,
    column_name,
    combine_parts,
    gathered,
    hot_cursor,
    insert_rows,
    one_statement,
    pipelined,
    pipelines,
    raw_delete,
)
from pynenc_django.db.transactions import (
    NAMED_LOCK_TIMEOUT_SEC,
    named_locks,
    write_transaction,
)

__all__ = [
    "DjangoBackendMixin",
    "DjangoNotConfiguredError",
    "NAMED_LOCK_TIMEOUT_SEC",
    "NEVER_BY_COUNT",
    "STATEMENT_CHARS",
    "STATEMENT_ROWS",
    "StatementPart",
    "close_when_thread_ends",
    "column_name",
    "combine_parts",
    "ensure_django",
    "fork_guard",
    "gathered",
    "get_connection",
    "hot_cursor",
    "in_event_loop",
    "insert_rows",
    "is_connection_lost",
    "is_database_error",
    "is_transient",
    "named_locks",
    "one_statement",
    "pipelined",
    "pipelines",
    "raw_delete",
    "retry_transient",
    "write_transaction",
]
