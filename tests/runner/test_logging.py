"""pynenc's log records go where Django's ``LOGGING`` sends them (issue 20, item 2).

pynenc 0.4 gives its app logger a stderr handler of its own and no propagation: a web
process printed two INFO lines per enqueue whatever ``LOGGING`` said, and ``LOGGING``'s
handlers never saw a record. Checked here with real client and runner processes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import ModuleType

import psutil
from pynenc import Pynenc

from tests.runner.conftest import RUNNER_STARTED, Runners, wait_until

SETTINGS_LOGGING = "tests.project.settings_logging"
SUBMIT = (
    "from tests.project.jobs.tasks import add; "
    "inv = add({x}, 1); print('SUBMITTED', inv.invocation_id, flush=True); "
    "{wait}"
)


def _client(runners: Runners, x: int, wait: bool = False, env: dict[str, str] | None = None):
    code = SUBMIT.format(x=x, wait="print('RESULT', inv.result)" if wait else "")
    process = runners.manage("shell", "-c", code, env=env, name=f"client-{x}")
    assert process.wait_exit(120) == 0, process.tail()
    match = re.search(r"SUBMITTED (\S+)", process.log())
    assert match, process.tail()
    return process, match.group(1)


def test_a_client_process_is_quiet_at_default_levels(app: Pynenc, runners: Runners) -> None:
    """No LOGGING for pynenc: an enqueue prints nothing (pynenc printed two INFO lines)."""
    process, invocation_id = _client(runners, 101)
    assert invocation_id not in process.log().replace(f"SUBMITTED {invocation_id}", ""), (
        f"the client printed pynenc's records:\n{process.log()}"
    )
    assert "pynenc." not in process.log(), process.log()


def test_logging_handlers_receive_the_records_of_clients_runners_and_workers(
    app: Pynenc, runners: Runners, tasks: ModuleType, tmp_path: Path
) -> None:
    log_file = tmp_path / "pynenc.log"
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS_LOGGING, "PYNENC_DJANGO_TEST_LOG_FILE": str(log_file)}
    runner = runners.start(env=env, wait=False)
    wait_until(
        lambda: log_file.exists() and "Spawned worker" in log_file.read_text(),
        90,
        lambda: f"no runner records in the LOGGING file:\n{runner.tail()}",
    )
    client, invocation_id = _client(runners, 102, wait=True, env=env)
    assert "RESULT 103" in client.log(), client.tail()
    text = log_file.read_text()
    pids = {line.split()[0] for line in text.splitlines() if invocation_id in line}
    assert len(pids) >= 2, f"the client's and a worker's records of {invocation_id}:\n{text}"
    assert str(runner.pid) in {line.split()[0] for line in text.splitlines()}, text
    assert "pynenc." not in client.log(), f"the client printed pynenc's records:\n{client.log()}"
    assert "Spawned worker" not in runner.log(), f"the runner printed them too:\n{runner.log()}"
    assert "\x1b[" not in text


def test_the_pynenc_logger_level_in_logging_applies(
    app: Pynenc, runners: Runners, tmp_path: Path
) -> None:
    log_file = tmp_path / "pynenc.log"
    env = {
        "DJANGO_SETTINGS_MODULE": SETTINGS_LOGGING,
        "PYNENC_DJANGO_TEST_LOG_FILE": str(log_file),
        "PYNENC_DJANGO_TEST_LOG_LEVEL": "WARNING",
    }
    _client(runners, 103, env=env)
    assert not log_file.exists() or log_file.read_text() == "", log_file.read_text()


def test_a_runner_logs_info_without_colour_codes_to_a_file(app: Pynenc, runners: Runners) -> None:
    """No LOGGING for pynenc: a runner shows its INFO lines on stderr, coloured only on a
    terminal (pynenc coloured them everywhere); ``--log-level`` still applies."""
    runner = runners.start(processes=1)
    assert RUNNER_STARTED.search(runner.log()), runner.tail()
    assert "\x1b[" not in runner.log_path.read_text(), runner.tail()
    quiet = runners.start("--log-level", "warning", processes=1, wait=False)
    # Its worker is spawned after the "Starting ..." line would have been written.
    wait_until(lambda: psutil.Process(quiet.pid).children(), 60, quiet.tail)
    time.sleep(1)
    assert "pynenc runner\n" in quiet.log(), quiet.tail()
    assert "Starting DjangoPersistentProcessRunner" not in quiet.log(), quiet.tail()
