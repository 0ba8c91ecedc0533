"""Private database servers for tests that restart or crash the database.

A test that restarts the server it runs against must not touch the machine's own server:
other test runs, other projects and the developer's tools use it, and a restart cuts them
all off (``pg_ctlcluster restart`` did exactly that). Such a test starts a server of its
own instead, from the installed binaries, on a free port of 127.0.0.1 and in a temporary
data directory, restarts or crashes that one, and removes it afterwards, also when the
test fails::

    with private_postgresql() as server:        # or private_mariadb()
        server.create_database("test_db")
        ...                                     # DATABASE_URL=server.database_url()
        server.restart()                        # fast shutdown, then start
        server.crash()                          # killed without a checkpoint, then started

Database servers refuse to run as root and tests run as root in CI, so as root the
server runs as an unprivileged system user (``postgres``, ``mysql``) that owns the
temporary directory. A missing binary or user raises :class:`ServerUnavailable`; tests
turn it into :func:`unavailable` (a skip on a developer's machine, a failure in CI).

:func:`django_database_on` points this process's Django connection at such a server for
the length of a block, so the test's own queries and the runner processes it starts (with
``DATABASE_URL=server.database_url()``) meet in the same database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
import pytest

HOST = "127.0.0.1"


class ServerUnavailable(Exception):
    """A prerequisite of a private server (a binary, an unprivileged user) is missing."""


def unavailable(reason: str) -> None:
    """Skip on a developer machine; in CI (``CI=true``) a missing prerequisite is an error,
    so a test that must run cannot silently stop running."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on now (the kernel's choice); the server binds it soon
    after, and a start that loses the race is retried on another (see ``_first_start``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def _clean_env() -> dict[str, str]:
    """Our environment without ``PG*``/``MYSQL*`` variables, which would point the server
    tools at another server or data directory. The reaper's marker stays
    (``tests/conftest.py``), so a server left behind by a crashed test is still killed."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL"))}


@dataclass(frozen=True)
class RunAs:
    """How to run a server binary: as ourselves, or (as root) as an unprivileged user."""

    user: pwd.struct_passwd | None

    @classmethod
    def for_server(cls, users: tuple[str, ...]) -> RunAs:
        """Ourselves unless we are root; then the first of ``users`` that exists."""
        if os.geteuid() != 0:
            return cls(None)
        for name in users:
            with contextlib.suppress(KeyError):
                return cls(pwd.getpwnam(name))
        raise ServerUnavailable(
            f"running as root and none of the users {', '.join(users)} exists to run "
            "the database server (servers refuse to run as root)"
        )

    @property
    def prefix(self) -> list[str]:
        """``runuser -u <user> --`` as root, nothing otherwise."""
        if self.user is None:
            return []
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        if not os.access(runuser, os.X_OK):
            raise ServerUnavailable("running as root and runuser (util-linux) is not installed")
        return [runuser, "-u", self.user.pw_name, "--"]

    def give(self, path: Path) -> None:
        """Make ``path`` (a directory we just created) the server user's."""
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)


class DatabaseServer(Protocol):
    """What :func:`django_database_on` and the tests need of a private server."""

    host: str
    port: int
    user: str

    def database_url(self, name: str = ...) -> str: ...

    def create_database(self, name: str) -> None: ...


# ---------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``: ``$PYNENC_DJANGO_PG_BINDIR``,
    else ``pg_config --bindir``, else the newest Debian ``/usr/lib/postgresql/<v>/bin``,
    else wherever ``initdb`` is on ``PATH``."""
    candidates: list[str] = []
    if os.environ.get("PYNENC_DJANGO_PG_BINDIR"):
        candidates.append(os.environ["PYNENC_DJANGO_PG_BINDIR"])
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            candidates.append(
                subprocess.run(
                    ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10
                ).stdout.strip()
            )

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)[-1:])

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb") or "").resolve().parent))
    for candidate in candidates:
        if candidate and all(
            os.access(Path(candidate, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")
        ):
            return Path(candidate)
    raise ServerUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: looked in "
        f"{', '.join(dict.fromkeys(c for c in candidates if c)) or 'no candidate'} "
        "(set PYNENC_DJANGO_PG_BINDIR, or install postgresql)"
    )


@dataclass
class PostgresServer:
    """A PostgreSQL server of one test: its binaries, its temporary directory (data
    directory, log, Unix socket) and its port. Controlled with ``pg_ctl``."""

    bindir: Path
    base: Path
    run_as: RunAs
    port: int = 0
    host: str = HOST
    #: The superuser initdb creates; connections from 127.0.0.1 are trusted.
    user: str = "postgres"
    _postmaster: psutil.Process | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def database_url(self, name: str = "postgres") -> str:
        return f"postgres://{self.user}@{self.host}:{self.port}/{name}"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        command = [*self.run_as.prefix, str(self.bindir / tool), *args]
        try:
            done = subprocess.run(
                command,
                cwd=self.base,  # readable by the server user, unlike the caller's cwd perhaps
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{' '.join(command)} did not finish within {timeout}s\n{_tail(self.log)}"
            ) from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
                f"\n--- {self.log}:\n{_tail(self.log)}"
            )
        return done.stdout

    def initdb(self, settings: Mapping[str, str] | None = None) -> None:
        """A new cluster, trusting local connections, with ``settings`` in its config."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: no need to wait for the disk
        )
        lines = {
            "listen_addresses": f"'{self.host}'",
            # Our directory, not /var/run/postgresql: the machine's server keeps its own.
            "unix_socket_directories": f"'{self.base}'",
            **dict(settings or {}),
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# pynenc-django tests: a private server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in lines.items())
            conf.write("include_if_exists = 'port.conf'\n")

    def _set_port(self, port: int) -> None:
        path = self.data / "port.conf"
        path.write_text(f"port = {port}\n")
        if self.run_as.user is not None:
            os.chown(path, self.run_as.user.pw_uid, self.run_as.user.pw_gid)
        self.port = port

    def _pg_ctl(self, *args: str, timeout: float = 120) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), *args, timeout=timeout)

    def start(self, timeout: float = 60) -> None:
        """Start and wait until it accepts connections (after crash recovery, if any)."""
        self._pg_ctl("start", "-w", "-t", str(int(timeout)), timeout=timeout + 30)
        self._postmaster = self._read_postmaster()

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects every session and checkpoints; ``immediate`` is a crash."""
        self._pg_ctl("stop", "-m", mode, "-w", "-t", "60")

    def restart(self) -> None:
        """A fast restart, as ``pg_ctlcluster restart``: sessions cut, the WAL flushed."""
        self._pg_ctl("restart", "-m", "fast", "-w", "-t", "60", timeout=150)
        self._postmaster = self._read_postmaster()

    def crash(self) -> None:
        """Stopped without a checkpoint (``-m immediate``), then started: WAL recovery."""
        self.stop("immediate")
        self.start()

    def _read_postmaster(self) -> psutil.Process | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        except (OSError, ValueError, IndexError, psutil.Error):
            return None

    def create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def destroy(self) -> None:
        """Stop it however it is (no checkpoint: its data is thrown away), kill whatever
        of it is left, and remove its directory."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "30", timeout=60)
        _kill_tree(self._postmaster or self._read_postmaster())
        shutil.rmtree(self.base, ignore_errors=True)


def _kill_tree(root: psutil.Process | None) -> None:
    """SIGKILL ``root`` (the very process: psutil checks its start time) and its children."""
    if root is None:
        return
    with contextlib.suppress(psutil.Error):
        if not root.is_running():
            return
        victims = [*root.children(recursive=True), root]
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(victims, timeout=10)


def _first_start(server: Any, start: Any, attempts: int = 3) -> None:
    """Start on a free port, on another if something took it in between."""
    for attempt in range(attempts):
        server._set_port(free_port(server.host))
        try:
            start()
            return
        except RuntimeError as exc:
            text = f"{exc}\n{_tail(server.log, 200)}"
            if attempt + 1 < attempts and re.search(r"already in use|could not bind", text, re.I):
                continue
            raise


@contextlib.contextmanager
def private_postgresql(settings: Mapping[str, str] | None = None) -> Iterator[PostgresServer]:
    """A running PostgreSQL server of this test's own, removed on exit however the test ends.

    ``settings`` are added to its ``postgresql.conf`` (values as written there, e.g.
    ``{"max_connections": "50"}``). Raises :class:`ServerUnavailable` when it cannot be
    started here for lack of binaries or of an unprivileged user.
    """
    bindir = postgres_bindir()
    run_as = RunAs.for_server(("postgres",))
    run_as.prefix  # noqa: B018  (raises ServerUnavailable early when runuser is missing)
    base = Path(tempfile.mkdtemp(prefix="pynenc-django-pg-"))
    server = PostgresServer(bindir=bindir, base=base, run_as=run_as)
    try:
        run_as.give(base)
        server.initdb(settings)
        _first_start(server, server.start)
        yield server
    finally:
        server.destroy()


# ---------------------------------------------------------------------------- MariaDB


def mariadb_binaries() -> tuple[Path, Path]:
    """``mariadb-install-db`` (or ``mysql_install_db``) and ``mariadbd`` (or ``mysqld``)."""

    def find(*names: str) -> Path | None:
        for name in names:
            found = shutil.which(name) or next(
                (
                    f"{d}/{name}"
                    for d in ("/usr/sbin", "/usr/bin")
                    if os.access(f"{d}/{name}", os.X_OK)
                ),
                None,
            )
            if found:
                return Path(found)
        return None

    install = find("mariadb-install-db", "mysql_install_db")
    daemon = find("mariadbd", "mysqld")
    if install is None or daemon is None:
        raise ServerUnavailable("MariaDB server binaries (mariadb-install-db, mariadbd) not found")
    return install, daemon


@dataclass
class MariaDBServer:
    """A MariaDB server of one test, run in the foreground as a child process (``mariadbd``
    does not daemonize), so a crash is a SIGKILL of that very process."""

    install_db: Path
    daemon: Path
    base: Path
    run_as: RunAs
    port: int = 0
    host: str = HOST
    #: ``root`` without a password (``--auth-root-authentication-method=normal``).
    user: str = "root"
    extra_args: tuple[str, ...] = ()
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "error.log"

    def database_url(self, name: str = "mysql") -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{name}"

    def _user_args(self) -> list[str]:
        # As root, mariadbd itself switches to the user (so its pid is the server's).
        return [f"--user={self.run_as.user.pw_name}"] if self.run_as.user is not None else []

    def install(self) -> None:
        command = [
            str(self.install_db),
            "--no-defaults",
            f"--datadir={self.data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *self._user_args(),
        ]
        done = subprocess.run(
            command,
            cwd=self.base,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )

    def _set_port(self, port: int) -> None:
        self.port = port

    def start(self, timeout: float = 60) -> None:
        """Start and wait until it accepts TCP connections (after InnoDB recovery, if any)."""
        command = [
            str(self.daemon),
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--socket={self.base / 'mysqld.sock'}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--log-error={self.log}",
            "--skip-name-resolve",
            *self._user_args(),
            *self.extra_args,
        ]
        self._process = subprocess.Popen(
            command,
            cwd=self.base,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of pytest does not reach it: destroy() does
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mariadbd exited with {self._process.returncode}:\n{_tail(self.log)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd not ready within {timeout}s:\n{_tail(self.log)}")
            time.sleep(0.1)

    def _signal(self, signum: int, timeout: float = 60) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signum)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"mariadbd still running {timeout}s after signal {signum}") from exc

    def stop(self) -> None:
        """A normal shutdown (SIGTERM): connections cut, InnoDB flushed."""
        self._signal(signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

    def crash(self) -> None:
        """SIGKILL, then started: InnoDB recovers from its redo log."""
        self._signal(signal.SIGKILL)
        self.start()

    def create_database(self, name: str) -> None:
        import MySQLdb

        conn = MySQLdb.connect(host=self.host, port=self.port, user=self.user, password="")
        try:
            conn.cursor().execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
        finally:
            conn.close()

    def destroy(self) -> None:
        if self._process is not None:
            with contextlib.suppress(Exception):
                self._signal(signal.SIGKILL, timeout=15)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def private_mariadb(extra_args: tuple[str, ...] = ()) -> Iterator[MariaDBServer]:
    """A running MariaDB server of this test's own, removed on exit however the test ends.

    ``extra_args`` go to ``mariadbd`` (e.g. ``("--innodb-flush-log-at-trx-commit=2",)``).
    """
    install_db, daemon = mariadb_binaries()
    run_as = RunAs.for_server(("mysql",))
    base = Path(tempfile.mkdtemp(prefix="pynenc-django-mariadb-"))
    server = MariaDBServer(
        install_db=install_db, daemon=daemon, base=base, run_as=run_as, extra_args=extra_args
    )
    try:
        run_as.give(base)
        server.install()
        _first_start(server, server.start)
        yield server
    finally:
        server.destroy()


# ---------------------------------------------------------------------------- Django


def _drop_connections() -> None:
    """Close this thread's Django connections and the process's result waiters (their
    ``LISTEN`` connection and signal file name the server they were made for)."""
    from django.db import connections

    from pynenc_django.wakeup import close_result_waiters

    connections.close_all()
    close_result_waiters()


@contextlib.contextmanager
def django_database_on(server: DatabaseServer, alias: str = "default") -> Iterator[None]:
    """This process's ``alias`` connection goes to ``server`` (same database ``NAME``, which
    must exist there) until the block ends; then back to the configured server.

    Every thread's connection of an alias shares one settings dict, so changing it (with
    this thread's connections closed) moves the thread's next queries. Connections other
    threads hold open stay where they are: use it where no other thread queries.
    """
    from django.db import connections

    settings_dict = connections.settings[alias]
    assert connections[alias].settings_dict is settings_dict
    saved = {key: settings_dict.get(key) for key in ("HOST", "PORT", "USER", "PASSWORD")}
    _drop_connections()
    settings_dict.update(HOST=server.host, PORT=server.port, USER=server.user, PASSWORD="")
    try:
        yield
    finally:
        _drop_connections()
        settings_dict.update(saved)
