"""Start ``manage.py pynenc_runner`` of the test project as real processes.

Every runner is its own session (``start_new_session=True``), so a signal reaches exactly
the process a test aims at, and the whole group (runner and workers, orphans included)
can be SIGKILLed afterwards. Each runner writes to a log file under ``tmp_path``; its
tail is part of every failure report.

The project's app id is fixed (``pynenc-django-runner-tests``), so its data is purged
before and after every test, and every test uses task arguments of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from tests.conftest import ORPHAN_MARKER

if TYPE_CHECKING:
    from pynenc import Pynenc

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "tests" / "project"
MANAGE = PROJECT / "manage.py"
PROJECT_SETTINGS = "tests.project.settings"

ANSI = re.compile(r"\x1b\[[0-9;]*m")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
RUNNER_STARTED = re.compile(rf"Starting DjangoPersistentProcessRunner runner:({UUID})")
WORKER_SPAWNED = re.compile(rf"Spawned worker pid:(\d+) worker:({UUID})")
WORKER_STARTED = re.compile(r"Persistent process worker started with pid:(\d+)")

RUNNING = "running"
PENDING = "pending"
SUCCESS = "success"
KILLED = "killed"
REROUTED = "rerouted"


#: Held by the test marked ``exclusive`` that is running, in any test session on this
#: machine (CI runs the three databases' slow tests at once).
EXCLUSIVE_LOCK = Path(tempfile.gettempdir()) / "pynenc-django-tests-exclusive.lock"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: runs runner processes for minutes or restarts the database server"
    )
    config.addinivalue_line(
        "markers",
        "exclusive: a cluster of many runners whose timing bounds assume the machine's cores;"
        " such tests of concurrent sessions run one at a time",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """An ``exclusive`` test waits for the others of every session on this machine.

    Eight runners with their workers each looking every second are some thirty busy
    processes: two such clusters at once on two cores starve each other's heartbeats and
    turns for seconds, and the test's bounds (a due time handled within 10 s of an
    accelerated clock) measure the machine, not the code. Outermost (``tryfirst``), so the
    wait is not counted in the test's own timeout.
    """
    if item.get_closest_marker("exclusive") is None:
        return (yield)
    with EXCLUSIVE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow runner tests last, so the quick ones report first (also under ``-x``)."""
    here = Path(__file__).parent

    def slow(item: pytest.Item) -> bool:
        return item.path.is_relative_to(here) and item.get_closest_marker("slow") is not None

    items.sort(key=slow)  # stable: the order is otherwise unchanged


# ---------------------------------------------------------------------------- processes


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def process_gone(pid: int, created: float | None = None) -> bool:
    """No such process, a zombie nobody reaped yet (it runs no code any more), or another
    process that reused the pid (``created`` is the original's ``create_time()``)."""
    try:
        proc = psutil.Process(pid)
        if created is not None and proc.create_time() != created:
            return True
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def create_times(pids: Iterable[int]) -> dict[int, float]:
    """``create_time()`` of each live pid, to tell it from a later process with its pid."""
    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found[pid] = psutil.Process(pid).create_time()
    return found


def marked_processes(group: int, extra_pids: Iterable[int] = ()) -> list[psutil.Process]:
    """Live processes of process group ``group`` (or in ``extra_pids``) that carry this
    test's environment marker: never an unrelated process that reused a pid."""
    marker = os.environ.get(ORPHAN_MARKER)
    extra = set(extra_pids)
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if os.getpgid(proc.pid) != group and proc.pid not in extra:
                continue
            if marker is not None and proc.environ().get(ORPHAN_MARKER) != marker:
                continue
            found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


@dataclass
class RunnerProcess:
    """One ``manage.py`` process of the test project and its log."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return strip_ansi(self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        body = "\n".join(self.log().splitlines()[-lines:])
        state = "running" if self.popen.poll() is None else f"exit code {self.popen.returncode}"
        return f"----- {self.name} (pid {self.pid}, {state}): {' '.join(self.args)}\n{body}"

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        """The first match of ``pattern`` in the log; fails if the process exits first."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log())
            if found:
                return found
            if self.exited():
                found = regex.search(self.log())  # written just before exiting
                if found:
                    return found
                pytest.fail(f"{self.name} exited before logging {regex.pattern!r}\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name} did not log {regex.pattern!r} within {timeout}s\n{self.tail()}"
                )
            time.sleep(0.05)

    @property
    def runner_id(self) -> str:
        return self.wait_for_log(RUNNER_STARTED).group(1)

    def workers(self) -> dict[int, str]:
        """Every worker this runner spawned so far: pid -> worker runner id."""
        return {int(pid): rid for pid, rid in WORKER_SPAWNED.findall(self.log())}

    def worker_pid(self, worker_runner_id: str) -> int:
        for pid, rid in self.workers().items():
            if rid == worker_runner_id:
                return pid
        pytest.fail(f"{self.name} never spawned worker:{worker_runner_id}\n{self.tail()}")

    def wait_ready(self, processes: int, timeout: float = 90) -> None:
        """Until the runner has started and ``processes`` workers report in."""
        self.runner_id  # noqa: B018  (waits for the start line)
        deadline = time.monotonic() + timeout
        while True:
            started = {int(pid) for pid in WORKER_STARTED.findall(self.log())}
            if len(started & set(self.workers())) >= processes:
                return
            if self.exited():
                pytest.fail(f"{self.name} exited while starting\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} workers not up within {timeout}s\n{self.tail()}")
            time.sleep(0.05)

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout}s\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the runner and everything it started, orphaned workers included."""
        if self.popen.poll() is None:
            self.popen.kill()
        victims = marked_processes(self.pid, self.workers())
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(victims, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


class Runners:
    """Starts project processes for one test and kills every one of them afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[RunnerProcess] = []

    def manage(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        name: str | None = None,
        manage_py: Path = MANAGE,
    ) -> RunnerProcess:
        """``manage.py <args>`` in its own session, output to a log file. Another project's
        ``manage_py`` chooses its own settings (``DJANGO_SETTINGS_MODULE`` is not passed)."""
        name = name or f"{args[0]}-{len(self.started) + 1}"
        log_path = self.tmp_path / f"{name}.log"
        full_env = {
            **os.environ,  # DATABASE_URL, PYNENC_DJANGO_TEST_DB_SUFFIX, the reaper's marker
            "DJANGO_SETTINGS_MODULE": PROJECT_SETTINGS,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        if manage_py != MANAGE:
            full_env.pop("DJANGO_SETTINGS_MODULE")
        command = [sys.executable, str(manage_py), *args]
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                command,
                cwd=manage_py.parent,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = RunnerProcess(name, args=list(args), log_path=log_path, popen=popen)
        self.started.append(process)
        return process

    def start(
        self,
        *extra: str,
        processes: int = 2,
        env: dict[str, str] | None = None,
        name: str | None = None,
        wait: bool = True,
    ) -> RunnerProcess:
        """``manage.py pynenc_runner --processes N``; by default waits for its workers."""
        name = name or f"runner-{len(self.started) + 1}"
        process = self.manage(
            "pynenc_runner", "--processes", str(processes), *extra, env=env, name=name
        )
        if wait:
            process.wait_ready(processes)
        return process

    def diag(self) -> str:
        return "\n".join(process.tail() for process in self.started)

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()


@pytest.fixture
def app() -> Generator[Pynenc, None, None]:
    """The project's pynenc app (as ``from pynenc_django import app``), purged around the test."""
    from django.db import connections

    from pynenc_django.project import get_app

    connections.close_all()  # a previous test may have restarted the server
    project_app = get_app()
    project_app.purge()
    yield project_app
    connections.close_all()
    project_app.purge()


@pytest.fixture
def tasks(app: Pynenc) -> ModuleType:
    from tests.project.jobs import tasks as module

    return module


@pytest.fixture
def calling(app: Pynenc) -> ModuleType:
    """Tasks of the Celery-style calling tests (``tests/project/jobs/calling.py``)."""
    from tests.project.jobs import calling as module

    return module


@pytest.fixture
def limits(app: Pynenc) -> ModuleType:
    """Tasks of the time-limit tests (``tests/project/jobs/limits.py``)."""
    from tests.project.jobs import limits as module

    return module


@pytest.fixture
def runners(app: Pynenc, tmp_path: Path) -> Generator[Runners, None, None]:
    started = Runners(tmp_path)
    yield started
    started.kill_all()


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    """A value unique to this test run, for task arguments."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        started = getattr(item, "funcargs", {}).get("runners")
        if isinstance(started, Runners) and started.started:
            report.sections.append(("runner logs", started.diag()))


# ---------------------------------------------------------------------------- database


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.05,
) -> Any:
    """Poll ``predicate`` until truthy (and return it); fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout}s: {text}")
        time.sleep(interval)


def statuses(app: Pynenc, invocation_ids: Iterable[str] | None = None) -> dict[str, str]:
    """Current orchestrator status of the app's invocations (all of them by default)."""
    from pynenc_django.models import Invocation

    qs = Invocation.objects.for_app(app.app_id)
    if invocation_ids is not None:
        qs = qs.filter(invocation_id__in=list(invocation_ids))
    return dict(qs.values_list("invocation_id", "status"))


@dataclass(frozen=True)
class HistoryEntry:
    status: str
    runner_id: str | None
    timestamp: datetime


def history(app: Pynenc, invocation_id: str) -> list[HistoryEntry]:
    from pynenc_django.models import InvocationHistory

    rows = (
        InvocationHistory.objects.for_app(app.app_id)
        .filter(invocation_id=invocation_id)
        .order_by("timestamp", "id")
        .values_list("status", "status_runner_id", "timestamp")
    )
    return [HistoryEntry(*row) for row in rows]


def history_statuses(app: Pynenc, invocation_id: str) -> list[str]:
    return [entry.status for entry in history(app, invocation_id)]


def killed_then_rerouted(app: Pynenc, invocation_id: str) -> bool:
    """Its history shows RUNNING, then KILLED and REROUTED: a stopping worker put it back."""
    trail = history_statuses(app, invocation_id)
    if RUNNING not in trail:
        return False
    after_running = trail[trail.index(RUNNING) + 1 :]
    return after_running[:2] == [KILLED, REROUTED]


def success_counts(app: Pynenc, invocation_ids: Iterable[str]) -> dict[str, int]:
    from django.db.models import Count

    from pynenc_django.models import InvocationHistory

    ids = list(invocation_ids)
    counted = dict(
        InvocationHistory.objects.for_app(app.app_id)
        .filter(invocation_id__in=ids, status=SUCCESS)
        .values("invocation_id")
        .annotate(n=Count("id"))
        .values_list("invocation_id", "n")
    )
    return {invocation_id: counted.get(invocation_id, 0) for invocation_id in ids}


def running_owned_by(app: Pynenc, invocation_ids: Iterable[str]) -> dict[str, str]:
    """RUNNING invocations among ``invocation_ids``: invocation id -> owning worker id."""
    from pynenc_django.models import Invocation

    return dict(
        Invocation.objects.for_app(app.app_id)
        .filter(invocation_id__in=list(invocation_ids), status=RUNNING)
        .values_list("invocation_id", "status_runner_id")
    )


def describe(app: Pynenc, invocation_ids: Iterable[str]) -> str:
    """Status and history of each invocation, for failure messages."""
    lines = []
    current = statuses(app, invocation_ids)
    for invocation_id in invocation_ids:
        trail = " > ".join(
            f"{e.status}({(e.runner_id or '-')[:8]})" for e in history(app, invocation_id)
        )
        lines.append(f"  {invocation_id[:8]} [{current.get(invocation_id)}]: {trail}")
    return "\n".join(lines)


def wait_all_success(
    app: Pynenc, invocation_ids: list[str], timeout: float, diag: Callable[[], str]
) -> None:
    def done() -> bool:
        current = statuses(app, invocation_ids)
        if not all(current.get(i) == SUCCESS for i in invocation_ids):
            return False
        # pynenc writes the history record just after the status: wait for it too.
        return all(success_counts(app, invocation_ids).values())

    wait_until(
        done,
        timeout,
        lambda: f"not every invocation reached SUCCESS:\n{describe(app, invocation_ids)}\n{diag()}",
        interval=0.2,
    )


def assert_success_exactly_once(app: Pynenc, invocation_ids: list[str], diag: str = "") -> None:
    counts = success_counts(app, invocation_ids)
    wrong = {i: n for i, n in counts.items() if n != 1}
    assert not wrong, (
        f"invocations without exactly one SUCCESS record: {wrong}\n"
        f"{describe(app, list(wrong))}\n{diag}"
    )


def active_statuses(app: Pynenc) -> dict[str, str]:
    """The app's invocations still RUNNING or PENDING."""
    return {i: s for i, s in statuses(app).items() if s in (RUNNING, PENDING)}


def now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------- lost hosts


def kill_process_group(process: RunnerProcess) -> None:
    """SIGKILL a runner's whole process group at once, runner and workers: what an OOM kill
    of its container, ``docker kill`` or a lost node does to a runner host."""
    import signal

    os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.popen.wait(timeout=10)


def runner_of(runners: Runners, worker_runner_id: str) -> RunnerProcess:
    """The started runner that spawned ``worker_runner_id``."""
    for process in runners.started:
        if worker_runner_id in process.workers().values():
            return process
    pytest.fail(f"no runner spawned worker:{worker_runner_id}\n{runners.diag()}")


@dataclass(frozen=True)
class Attempt:
    """One line of a task's own record (``tasks.recorded_sleep``)."""

    event: str  # "start" or "finish"
    pid: int
    at: datetime


def attempt_records(path: Path) -> list[Attempt]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        event, pid, at = line.split()
        records.append(Attempt(event, int(pid), datetime.fromtimestamp(float(at), UTC)))
    return records
