"""A fault-injecting TCP proxy between runner processes and a database server.

The shared PostgreSQL and MariaDB servers are never stopped: a test points a runner's
``DATABASE_URL`` at a :class:`FaultProxy`, which relays to the real server and can play
"server down" on its own: every relayed connection cut (both sockets) and new ones refused
(the listening socket closed: ``ECONNREFUSED``) for a while, then service again.

It reads just enough of each protocol to cut at one exact moment, a *claim in flight*:
the claim has committed on the server, and the client is about to learn which invocation
it claimed. The server's reply is dropped and the connection cut, so the client sees a
lost connection and never the outcome.

* MariaDB/MySQL: the client's ``UPDATE`` that gives the target invocation a status
  (``'pending'`` for a claim; client-side interpolation puts the id and the status in the
  statement text); the cut comes with the server's reply to that transaction's ``COMMIT``,
  or to the statement itself when it runs in autocommit mode.
* PostgreSQL: the one-statement claim (its text has ``SKIP LOCKED``; psycopg prepares it,
  so later executions name it in a Bind message), autocommitted; the cut comes when the
  server's response holds a row naming the target invocation and its ReadyForQuery, sent
  after the implicit transaction committed.

Only what these tests need: no TLS (the URL must turn it off where the server offers
it), no compression, no packets over 16 MiB.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

FORWARD = "forward"
HOLD = "hold"
CUT = "cut"


@dataclass
class Cut:
    """A write cut in flight: when the server went "down", and when it came back."""

    target: str
    down_for: float
    status: str = "pending"  # MariaDB/MySQL: the status the cut write sets
    fired_at: float | None = None  # time.time()
    back_at: float | None = None
    fired: threading.Event = field(default_factory=threading.Event)
    back: threading.Event = field(default_factory=threading.Event)


class _MysqlInspector:
    """Client packets: 3-byte length, sequence id, payload; commands have sequence 0."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.buffer = b""
        self.in_transaction = False
        self.write_seen = False  # the target's status update, in this transaction
        self.reply_is_cut = False  # the server's next reply ends the write: cut it

    def client(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            length = int.from_bytes(self.buffer[:3], "little")
            if len(self.buffer) < 4 + length:
                return
            seq, payload = self.buffer[3], self.buffer[4 : 4 + length]
            self.buffer = self.buffer[4 + length :]
            if seq != 0 or not payload or payload[0] != 0x03:  # COM_QUERY
                continue
            text = payload[1:].strip()
            upper = text[:24].upper().replace(b" ", b"")
            if upper in (b"SETAUTOCOMMIT=0", b"BEGIN") or upper.startswith(b"STARTTRANSACTION"):
                self.in_transaction = True
            elif upper in (b"COMMIT", b"ROLLBACK", b"SETAUTOCOMMIT=1"):
                self.reply_is_cut = self.write_seen and upper == b"COMMIT"
                self.in_transaction = self.write_seen = False
            cut = self.proxy.armed
            if (
                cut is not None
                and upper.startswith(b"UPDATE")
                and cut.target.encode() in text
                and f"'{cut.status}'".encode() in text
            ):
                self.write_seen = True
                self.reply_is_cut = not self.in_transaction

    def server(self, data: bytes) -> str:
        if self.reply_is_cut:  # the reply to the write's COMMIT (or autocommit): done
            return CUT
        return FORWARD


class _PostgresInspector:
    """Messages: a type byte and a 4-byte length (the client's first has no type byte)."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client_buffer = b""
        self.server_buffer = b""
        self.started = False
        self.claim_statements: set[bytes] = set()
        self.unnamed_is_claim = False
        self.claims_in_flight = 0
        self.hit = False

    def client(self, data: bytes) -> None:
        self.client_buffer += data
        while True:
            if not self.started:
                if len(self.client_buffer) < 4:
                    return
                length = struct.unpack("!I", self.client_buffer[:4])[0]
                if len(self.client_buffer) < length:
                    return
                self.client_buffer = self.client_buffer[length:]
                self.started = True
                continue
            if len(self.client_buffer) < 5:
                return
            kind = self.client_buffer[:1]
            length = struct.unpack("!I", self.client_buffer[1:5])[0]
            if len(self.client_buffer) < 1 + length:
                return
            body = self.client_buffer[5 : 1 + length]
            self.client_buffer = self.client_buffer[1 + length :]
            if kind == b"P":  # Parse: name, query, ...
                name, rest = body.split(b"\0", 1)
                query = rest.split(b"\0", 1)[0]
                claim = b"SKIP LOCKED" in query
                if name:
                    if claim:
                        self.claim_statements.add(name)
                    else:
                        self.claim_statements.discard(name)
                else:
                    self.unnamed_is_claim = claim
            elif kind == b"B":  # Bind: portal, statement, ...
                statement = body.split(b"\0", 2)[1]
                if statement in self.claim_statements or (not statement and self.unnamed_is_claim):
                    self.claims_in_flight += 1
            elif kind == b"Q" and b"SKIP LOCKED" in body:  # a simple query
                self.claims_in_flight += 1

    def server(self, data: bytes) -> str:
        if not self.claims_in_flight and not self.server_buffer:
            return FORWARD
        self.server_buffer += data
        cut = self.proxy.armed
        while len(self.server_buffer) >= 5:
            kind = self.server_buffer[:1]
            length = struct.unpack("!I", self.server_buffer[1:5])[0]
            if len(self.server_buffer) < 1 + length:
                break
            body = self.server_buffer[5 : 1 + length]
            self.server_buffer = self.server_buffer[1 + length :]
            if kind == b"D" and cut is not None and cut.target.encode() in body:
                self.hit = True
            elif kind == b"Z":  # ReadyForQuery: the implicit transaction has ended
                self.claims_in_flight = max(0, self.claims_in_flight - 1)
                if self.hit:
                    return CUT
        if self.claims_in_flight or self.server_buffer:
            return HOLD
        return FORWARD


class _Relay:
    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        inspector = _MysqlInspector if proxy.protocol == "mysql" else _PostgresInspector
        self.inspector = inspector(proxy)
        self.held = b""

    def run(self) -> None:
        try:
            self.upstream = socket.create_connection(self.proxy.target, timeout=5)
            self.upstream.settimeout(None)
        except OSError:
            self.close()
            return
        try:
            self._pump()
        except (OSError, ValueError):  # cut: its sockets were closed by another thread
            pass
        finally:
            self.close()
            self.proxy._forget(self)

    def _pump(self) -> None:
        assert self.upstream is not None
        sockets = [self.client, self.upstream]
        while True:
            readable, _, _ = select.select(sockets, [], [], 0.5)
            if self.proxy._closed:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                if sock is self.client:
                    self.inspector.client(data)
                    self.upstream.sendall(data)
                    continue
                verdict = self.inspector.server(data)
                if verdict == CUT:
                    self.proxy._fire()
                    return
                if verdict == HOLD:
                    self.held += data
                    continue
                self.client.sendall(self.held + data)
                self.held = b""

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class FaultProxy:
    """Relays ``127.0.0.1:<port>`` to ``target``; see the module docstring."""

    def __init__(self, target: tuple[str, int], protocol: str) -> None:
        if protocol not in ("mysql", "postgresql"):
            raise ValueError(f"no fault proxy for {protocol!r}")
        self.target = target
        self.protocol = protocol
        self.armed: Cut | None = None
        self.cuts: list[Cut] = []
        self._relays: set[_Relay] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._down_until = 0.0
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = self._listen()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this proxy's."""
        parts = urlsplit(database_url)
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        query = parts.query
        if self.protocol == "postgresql":  # plain protocol: the proxy reads it
            extra = "sslmode=disable&gssencmode=disable"
            query = f"{query}&{extra}" if query else extra
        netloc = f"{credentials}127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def cut_claim(self, invocation_id: str, down_for: float) -> Cut:
        """Arm a one-shot cut of the claim of ``invocation_id`` (see the module docstring),
        followed by ``down_for`` seconds of refused connections."""
        return self._arm(Cut(invocation_id, down_for))

    def cut_status_write(self, invocation_id: str, status: str, down_for: float) -> Cut:
        """MariaDB/MySQL: the same for the write that gives ``invocation_id`` ``status``."""
        if self.protocol != "mysql":
            raise ValueError("status writes are recognised on MariaDB/MySQL only")
        return self._arm(Cut(invocation_id, down_for, status))

    def _arm(self, cut: Cut) -> Cut:
        with self._lock:
            self.armed = cut
        return cut

    def close(self) -> None:
        self._closed = True
        with self._lock:
            relays = list(self._relays)
            listener, self._listener = self._listener, None
        for relay in relays:
            relay.close()
        if listener is not None:
            listener.close()
        self._thread.join(5)

    # ------------------------------------------------------------------ internals

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        return listener

    def _serve(self) -> None:
        while not self._closed:
            with self._lock:
                listener = self._listener
                if listener is None and time.monotonic() >= self._down_until:
                    listener = self._listener = self._listen()
                    for cut in self.cuts:
                        if cut.back_at is None:
                            cut.back_at = time.time()
                            cut.back.set()
            if listener is None:
                time.sleep(0.01)
                continue
            try:
                readable, _, _ = select.select([listener], [], [], 0.05)
                if not readable:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):  # closed by _fire meanwhile
                continue
            relay = _Relay(self, client)
            with self._lock:
                self._relays.add(relay)
            threading.Thread(target=relay.run, name="fault-relay", daemon=True).start()

    def _forget(self, relay: _Relay) -> None:
        with self._lock:
            self._relays.discard(relay)

    def _fire(self) -> None:
        """Server "down": cut every relayed connection and refuse new ones for the cut's
        ``down_for`` (0: accept them again at once, as after a restart that was quick)."""
        with self._lock:
            cut, self.armed = self.armed, None
            if cut is None:
                return
            cut.fired_at = time.time()
            self.cuts.append(cut)
            listener = None
            if cut.down_for > 0:
                self._down_until = time.monotonic() + cut.down_for
                listener, self._listener = self._listener, None
            else:
                cut.back_at = cut.fired_at
            relays = list(self._relays)
        if listener is not None:
            listener.close()
        for relay in relays:
            relay.close()
        cut.fired.set()
        if cut.back_at is not None:
            cut.back.set()
