"""Start and stop ``manage.py pynenc_runner`` processes (for ``demo`` and ``serve``).

Each runner is started in a session of its own, so a Ctrl-C in the terminal reaches only
the command that started it, which then stops every runner exactly once, with SIGTERM
(pynenc_django's graceful stop: a second signal would force it). Whatever is still alive
after the grace period (a runner and its workers share a process group) is SIGKILLed:
no process outlives the command, whether it succeeds, fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from django.conf import settings

MANAGE_PY = Path(settings.BASE_DIR) / "manage.py"


@dataclass
class RunnerProcess:
    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 25) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill_group(self) -> None:
        """SIGKILL the runner and everything left in its process group (its workers)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


class RunnerGroup:
    """The runners one command started; a context manager that never leaves them behind."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.processes: list[RunnerProcess] = []

    def start(self, name: str, *args: str) -> RunnerProcess:
        """``manage.py pynenc_runner --name <name> <args>``; output to ``<log_dir>/<name>.log``
        if set. The admin shows the runner, and its workers, by that name."""
        args = ("--name", name, *args)
        command = [sys.executable, str(MANAGE_PY), "pynenc_runner", *args]
        log = log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        popen = subprocess.Popen(
            command,
            cwd=MANAGE_PY.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=True,
        )
        process = RunnerProcess(name, list(args), popen, log_path, log)
        self.processes.append(process)
        return process

    def exited(self) -> list[RunnerProcess]:
        return [p for p in self.processes if not p.running()]

    def stop(self, grace: float = 30.0) -> dict[str, int]:
        """SIGTERM every runner once, wait up to ``grace`` seconds, SIGKILL the rest.

        Returns each runner's exit code (``-9`` for one that had to be killed).
        """
        for process in self.processes:
            if process.running():
                with contextlib.suppress(ProcessLookupError):
                    process.popen.send_signal(signal.SIGCONT)  # in case it was frozen
                    process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes: dict[str, int] = {}
        try:
            for process in self.processes:
                try:
                    codes[process.name] = process.popen.wait(
                        timeout=max(0.1, deadline - time.monotonic())
                    )
                except subprocess.TimeoutExpired:
                    codes[process.name] = -signal.SIGKILL
                process.kill_group()  # stragglers of a runner that exited, or the runner
        finally:  # even on a second Ctrl-C while waiting: kill whatever is left
            for process in self.processes:
                process.kill_group()
                if process._log is not None:
                    process._log.close()
            self.processes.clear()
        return codes

    def __enter__(self) -> RunnerGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.processes:  # only if the command did not stop them itself
            self.stop(grace=15.0)


@contextlib.contextmanager
def signals_raise_keyboard_interrupt():  # type: ignore[no-untyped-def]
    """SIGTERM and SIGHUP end the command like Ctrl-C, so its ``finally`` blocks (which
    stop the runners) run when it is killed politely, e.g. by a CI timeout or a closed
    terminal."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
