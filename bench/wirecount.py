"""Count what a process sends to its database or Redis server, in one unit for every system.

``make bench`` compares queues built on different drivers: Django's (psycopg 3, mysqlclient,
sqlite3), procrastinate's (psycopg 3, async pool), Celery's (redis-py), pynenc's own SQLite
backend (sqlite3). Counting with a framework hook (Django's ``execute_wrapper``) would miss
what the driver sends by itself, such as the ``BEGIN``/``COMMIT`` around ``atomic()``, and see
nothing of the systems without Django. So this module counts **at the driver**, the same way
for all, and only in the measurement's untimed counting phase (``install`` patches the driver
classes, ``uninstall`` restores them; no process of a timed phase ever has the patches).

What counts as one **statement** (every request the client sends that the server executes and
answers, transaction control included, nothing left out for one system and kept for another):

* psycopg 3: every statement a cursor sends (``execute``; ``executemany`` once per parameter
  set; server-side prepared statements once per execution, plus one ``PREPARE`` the first
  time on each connection), every command the connection sends itself (``BEGIN``, ``COMMIT``,
  ``ROLLBACK``, savepoints of ``Connection.transaction()``), ``LISTEN``/``NOTIFY``, and the
  empty query psycopg_pool sends to check a connection.
* mysqlclient: every ``query`` (cursors go through it), ``commit``, ``rollback``, each
  ``autocommit`` change (``SET autocommit``), ``ping`` (Django's health check on MySQL).
* sqlite3: every statement executed through the sqlite3 API (``executemany`` once per
  parameter set), ``commit``/``rollback`` when a transaction is open, and the ``BEGIN`` the
  sqlite3 module sends by itself before a write (``PRAGMA``s included). Not SQLite's trace
  callback: it reports a statement again for every row of a trigger it fires.
* redis-py: every command sent, each command of a pipeline or a ``MULTI`` on its own.

Not a statement: what the driver does inside its connect call (TCP, authentication,
mysqlclient's character set and initial ``autocommit``, redis-py's ``HELLO``/``CLIENT
SETINFO``/``SELECT``): each new connection is counted once under ``connections`` instead.
Statements a framework runs after connecting (Django's ``PRAGMA``s on SQLite, its
``SET autocommit`` on MySQL) are statements.

Per process, a daemon thread rewrites ``$BENCH_WIRE_COUNT_DIR/<pid>.json`` every 0.2 s with
the cumulative counts (``install_from_env``, called by every measured process at start-up);
the client counts in memory (``install()``, ``snapshot()``). After ``fork`` (Celery's
prefork pool) the child starts from zero under its own pid.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import multiprocessing
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

COUNT_DIR_ENV = "BENCH_WIRE_COUNT_DIR"
DUMP_EVERY_SEC = 0.2
MAX_KEY_CHARS = 120

_lock = threading.Lock()
_statements: Counter[str] = Counter()
_connections = 0
_paused = False
_directory: Path | None = None
_writer_pid = 0
_restore: list[Callable[[], None]] = []
_local = threading.local()  # .connecting: inside a driver's connect call

_WS = re.compile(r"\s+")
_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$])-?\d+(?:\.\d+)?\b")
_DOLLAR = re.compile(r"\$\d+")
_LIST = re.compile(r"(?:%s|\?)(?:\s*,\s*(?:%s|\?))+")
_SAVEPOINT = re.compile(r'"?s\d+_x\d+"?')


# ---------------------------------------------------------------------------- counting


def normalize(sql: Any) -> str:
    """Literals and placeholders folded, so equal statements group; cut to a short key."""
    if isinstance(sql, bytes | bytearray | memoryview):
        text = bytes(sql).decode("utf-8", "replace")
    elif hasattr(sql, "as_string"):
        try:
            text = sql.as_string(None)
        except Exception:
            text = str(sql)
    else:
        text = str(sql)
    text = _WS.sub(" ", text).strip()
    if not text:
        return "(empty query)"
    text = _SAVEPOINT.sub("<id>", _STRING.sub("?", text))
    text = _LIST.sub("?, ...", _DOLLAR.sub("?", _NUMBER.sub("?", text)).replace("%s", "?"))
    return text[:MAX_KEY_CHARS]


#: What a driver sends on its own, never through a cursor: transaction control (psycopg's and
#: the sqlite3 module's ``BEGIN``, ``COMMIT``, ``ROLLBACK``, mysqlclient's ``SET autocommit``),
#: MySQL's ping and psycopg's one-time ``PREPARE``. Django's ``execute_wrapper``, the unit of
#: issue 6's statement budget, sees none of it.
DRIVER_SENT = frozenset(
    {
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SET autocommit=0",
        "SET autocommit=1",
        "BEGIN (sqlite3 module, implicit)",
        "PING (COM_PING)",
    }
)


def driver_sent(key: str) -> bool:
    """Whether a counted statement is one the driver sent on its own (:data:`DRIVER_SENT`)."""
    return key in DRIVER_SENT or key.startswith("PREPARE ")


def _count(key: str, n: int = 1) -> None:
    # Not installed any more: a connection opened meanwhile (sqlite3) counts nothing.
    if _paused or not _restore or getattr(_local, "connecting", False):
        return
    with _lock:
        _statements[key] += n


def _count_connection() -> None:
    global _connections
    if _paused:
        return
    with _lock:
        _connections += 1


@contextlib.contextmanager
def _connecting() -> Iterator[None]:
    previous = getattr(_local, "connecting", False)
    _local.connecting = True
    try:
        yield
    finally:
        _local.connecting = previous


def snapshot() -> dict[str, Any]:
    """This process's cumulative counts."""
    with _lock:
        statements = dict(_statements)
        connections = _connections
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "name": multiprocessing.current_process().name,
        "t": time.time(),
        "total": sum(statements.values()),
        "connections": connections,
        "statements": statements,
    }


def pause(paused: bool = True) -> None:
    """Stop (or resume) counting in this process, e.g. while the client only waits."""
    global _paused
    _paused = paused


@contextlib.contextmanager
def paused() -> Iterator[None]:
    pause(True)
    try:
        yield
    finally:
        pause(False)


def reset() -> None:
    global _connections
    with _lock:
        _statements.clear()
        _connections = 0


# ---------------------------------------------------------------------------- drivers


def _patch(owner: Any, name: str, wrapper: Any) -> None:
    """Set ``owner.name``; ``uninstall`` puts back exactly what was in its ``__dict__``."""
    had = name in vars(owner)
    original = vars(owner).get(name)
    setattr(owner, name, wrapper)

    def restore() -> None:
        if had:
            setattr(owner, name, original)
        else:
            delattr(owner, name)

    _restore.append(restore)


def _patch_psycopg() -> None:
    try:
        import psycopg
        from psycopg import _connection_base, _cursor_base, client_cursor
    except ImportError:
        return

    def sends(original: Any, prefix: str = "") -> Any:
        def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            _count(prefix + normalize(getattr(query, "query", query)))
            return original(self, query, *args, **kwargs)

        return counted

    base = _cursor_base.BaseCursor
    _patch(base, "_execute_send", sends(base._execute_send))
    # (name, pgq): the first execution of a prepared statement on a connection
    original_prepare = base._send_prepare

    def send_prepare(self: Any, name: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        _count("PREPARE " + normalize(query.query))
        return original_prepare(self, name, query, *args, **kwargs)

    _patch(base, "_send_prepare", send_prepare)
    original_prepared = base._send_query_prepared

    def send_prepared(self: Any, name: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        _count(normalize(query.query))
        return original_prepared(self, name, query, *args, **kwargs)

    _patch(base, "_send_query_prepared", send_prepared)
    mixin = client_cursor.ClientCursorMixin
    _patch(mixin, "_execute_send", sends(mixin._execute_send))

    connection = _connection_base.BaseConnection
    original_command = connection._exec_command

    def exec_command(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        _count(normalize(command))
        return (yield from original_command(self, command, *args, **kwargs))

    _patch(connection, "_exec_command", exec_command)

    sync_connect = vars(psycopg.Connection)["connect"].__func__

    def connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        conn = sync_connect(cls, *args, **kwargs)
        _count_connection()
        return conn

    _patch(psycopg.Connection, "connect", classmethod(connect))
    # psycopg.connect is Connection.connect bound at import time (Django calls it).
    _patch(psycopg, "connect", psycopg.Connection.connect)
    async_connect = vars(psycopg.AsyncConnection)["connect"].__func__

    async def aconnect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        conn = await async_connect(cls, *args, **kwargs)
        _count_connection()
        return conn

    _patch(psycopg.AsyncConnection, "connect", classmethod(aconnect))


def _patch_mysqlclient() -> None:
    try:
        from MySQLdb import _mysql, connections
    except ImportError:
        return
    cls = connections.Connection
    original_init = cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        with _connecting():
            original_init(self, *args, **kwargs)
        _count_connection()

    _patch(cls, "__init__", init)
    original_query = cls.query

    def query(self: Any, sql: Any) -> Any:
        _count(normalize(sql))
        return original_query(self, sql)

    _patch(cls, "query", query)

    def command(name: str, key: str) -> Any:
        method = getattr(_mysql.connection, name)

        def counted(self: Any, *args: Any) -> Any:
            _count(key)
            return method(self, *args)

        return counted

    _patch(cls, "commit", command("commit", "COMMIT"))
    _patch(cls, "rollback", command("rollback", "ROLLBACK"))
    _patch(cls, "ping", command("ping", "PING (COM_PING)"))
    original_autocommit = cls.autocommit

    def autocommit(self: Any, on: Any) -> Any:
        if self.get_autocommit() != bool(on):  # only then does it send anything
            _count(f"SET autocommit={int(bool(on))}")
        return original_autocommit(self, on)

    _patch(cls, "autocommit", autocommit)


_CURSORS: dict[type, type] = {}


def _counting_cursor(factory: type) -> type:
    """``factory`` (sqlite3.Cursor, or Django's subclass) counting what it executes."""
    if factory not in _CURSORS:

        class Counting(factory):  # type: ignore[misc, valid-type]
            def execute(self, sql: Any, *args: Any) -> Any:
                with _implicit_begin(self.connection, sql):
                    return super().execute(sql, *args)

            def executemany(self, sql: Any, seq: Any) -> Any:
                seq = list(seq)
                with _implicit_begin(self.connection, sql, len(seq)):
                    return super().executemany(sql, seq)

            def executescript(self, script: Any) -> Any:
                _count(normalize(script))
                return super().executescript(script)

        Counting.__name__ = f"Counting{factory.__name__}"
        _CURSORS[factory] = Counting
    return _CURSORS[factory]


@contextlib.contextmanager
def _implicit_begin(conn: Any, sql: Any, n: int = 1) -> Iterator[None]:
    """Count the statement ``n`` times, and the ``BEGIN`` the sqlite3 module sends by
    itself before a DML statement outside a transaction (its legacy transaction control)."""
    _count(normalize(sql), n)
    was = conn.in_transaction
    try:
        yield
    finally:
        if not was and conn.in_transaction and not str(sql).lstrip().upper().startswith("BEGIN"):
            _count("BEGIN (sqlite3 module, implicit)")


def _patch_sqlite() -> None:
    """Count at the sqlite3 API, with a connection factory: SQLite's own trace callback
    reports a statement again for each trigger it fires (pynenc-django's status history),
    which a server-side trigger never costs a client."""
    import sqlite3
    import sqlite3.dbapi2

    class CountingConnection(sqlite3.Connection):
        def cursor(self, factory: type = sqlite3.Cursor) -> Any:  # type: ignore[override]
            return super().cursor(_counting_cursor(factory))

        def execute(self, sql: Any, *args: Any) -> Any:  # type: ignore[override]
            return self.cursor().execute(sql, *args)

        def executemany(self, sql: Any, seq: Any) -> Any:  # type: ignore[override]
            return self.cursor().executemany(sql, seq)

        def executescript(self, script: Any) -> Any:  # type: ignore[override]
            return self.cursor().executescript(script)

        def commit(self) -> None:
            if self.in_transaction:
                _count("COMMIT")
            super().commit()

        def rollback(self) -> None:
            if self.in_transaction:
                _count("ROLLBACK")
            super().rollback()

        def __exit__(self, exc_type: Any, *rest: Any) -> Any:
            if self.in_transaction:
                _count("ROLLBACK" if exc_type else "COMMIT")
            return super().__exit__(exc_type, *rest)

    original = sqlite3.dbapi2.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("factory", CountingConnection)
        conn = original(*args, **kwargs)
        _count_connection()
        return conn

    # Django calls sqlite3.dbapi2.connect, pynenc sqlite3.connect: the same function.
    _patch(sqlite3, "connect", connect)
    _patch(sqlite3.dbapi2, "connect", connect)


def _patch_redis() -> None:
    try:
        from redis import connection
    except ImportError:
        return

    def pack(original: Any) -> Any:
        def counted(self: Any, *args: Any) -> Any:
            if args:
                name = args[0]
                name = name.decode() if isinstance(name, bytes) else str(name)
                _count("REDIS " + name.upper())
            return original(self, *args)

        return counted

    for serializer in ("PythonRespSerializer", "HiredisRespSerializer"):
        if cls := getattr(connection, serializer, None):
            _patch(cls, "pack", pack(cls.pack))
    abstract = connection.AbstractConnection
    original_connect = abstract.connect_check_health

    def connect_check_health(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._sock:
            return original_connect(self, *args, **kwargs)
        with _connecting():
            result = original_connect(self, *args, **kwargs)
        _count_connection()
        return result

    _patch(abstract, "connect_check_health", connect_check_health)


def installed() -> bool:
    return bool(_restore)


def install(directory: Path | None = None) -> None:
    """Patch every driver this process can import; with ``directory``, dump there too.

    Existing sqlite3 connections keep no trace callback: open them after this (the client
    closes its Django connections first).
    """
    global _directory
    if not _restore:
        _patch_psycopg()
        _patch_mysqlclient()
        _patch_sqlite()
        _patch_redis()
    if directory is not None and _directory is None:
        _directory = directory
        _start_writer()
        atexit.register(_final_dump)
        os.register_at_fork(after_in_child=_after_fork)


def uninstall() -> None:
    """Restore every patched driver method (the client, after its counting phase)."""
    while _restore:
        _restore.pop()()


def install_from_env() -> bool:
    """``install`` into ``$BENCH_WIRE_COUNT_DIR`` when it is set (processes under test)."""
    value = os.environ.get(COUNT_DIR_ENV)
    if not value:
        return False
    install(Path(value))
    return True


def _dump() -> None:
    if _directory is None:
        return
    payload = snapshot()
    tmp = _directory / f".{os.getpid()}.json.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, _directory / f"{os.getpid()}.json")


def _writer() -> None:
    me = os.getpid()
    while _writer_pid == me:
        with contextlib.suppress(OSError):
            _dump()
        time.sleep(DUMP_EVERY_SEC)


def _start_writer() -> None:
    global _writer_pid
    _writer_pid = os.getpid()
    threading.Thread(target=_writer, name="bench-wirecount", daemon=True).start()


def _final_dump() -> None:
    with contextlib.suppress(OSError):
        _dump()


def _after_fork() -> None:
    """A forked child (Celery's pool): its own counts from zero, its own file and writer."""
    global _lock
    _lock = threading.Lock()  # the parent's may have been held by another thread
    reset()
    if _directory is not None:
        _start_writer()


def read_dir(directory: Path) -> dict[int, dict[str, Any]]:
    """Every process's last dump in ``directory``, by pid."""
    out: dict[int, dict[str, Any]] = {}
    for path in directory.glob("*.json"):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now
        out[int(payload["pid"])] = payload
    return out
