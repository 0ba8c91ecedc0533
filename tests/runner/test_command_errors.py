"""``manage.py pynenc_runner`` and ``manage.py check`` on bad input: clear messages, no leaks."""

from __future__ import annotations

import re
import signal
import socket

import pytest
from django.db import connection
from pynenc import Pynenc

from tests.runner.conftest import Runners, wait_until

SECRET = "S3cret-pw-never-printed"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unknown_runner_exits_2(app: Pynenc, runners: Runners) -> None:
    process = runners.start("--runner", "Nope", wait=False)
    assert process.wait_exit(60) == 2, process.tail()
    log = process.log()
    assert "Unknown runner 'Nope'" in log, process.tail()
    assert "DjangoPersistentProcessRunner" in log, "the message lists the available runners"
    assert "Traceback" not in log, process.tail()


def test_unknown_queue_exits_2(app: Pynenc, runners: Runners) -> None:
    process = runners.start("--queues", "nope", wait=False)
    assert process.wait_exit(60) == 2, process.tail()
    log = process.log()
    assert "Unknown queue(s) 'nope'" in log, process.tail()
    assert "default" in log, "the message lists the declared queues"
    assert "Traceback" not in log, process.tail()


def test_unreachable_database_is_reported_and_retried_without_the_password(
    app: Pynenc, runners: Runners
) -> None:
    # The server of the configured vendor (PostgreSQL for SQLite runs), on a closed port.
    scheme = "mysql" if connection.vendor == "mysql" else "postgres"
    port = closed_port()
    url = f"{scheme}://pynenc_user:{SECRET}@127.0.0.1:{port}/pynenc_unreachable"
    process = runners.start(wait=False, env={"DATABASE_URL": url})

    unreachable = rf"database .*127\.0\.0\.1:{port}.* is unreachable .*retrying"
    process.wait_for_log(unreachable, timeout=60)
    # It keeps trying instead of giving up.
    wait_until(
        lambda: len(re.findall(unreachable, process.log())) >= 2,
        30,
        process.tail,
        interval=0.1,
    )
    assert not process.exited(), process.tail()
    process.send(signal.SIGKILL)
    process.wait_exit(10)

    log = process.log()
    assert SECRET not in log, f"the password leaked:\n{process.tail()}"
    assert "Traceback" not in log, process.tail()


@pytest.mark.parametrize("command", [["check"], ["pynenc_runner", "--processes", "1"]])
def test_misspelled_pynenc_key_is_reported_as_e003(
    app: Pynenc, runners: Runners, command: list[str]
) -> None:
    process = runners.manage(
        *command, env={"DJANGO_SETTINGS_MODULE": "tests.project.settings_typo"}
    )
    code = process.wait_exit(60)
    log = process.log()
    assert code != 0, process.tail()
    assert "pynenc_django.E003" in log, process.tail()
    assert "'num_proceses'" in log, process.tail()
    assert "Did you mean 'num_processes'?" in log, process.tail()
