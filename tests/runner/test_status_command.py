"""``manage.py pynenc_status`` as a liveness probe, with and without a runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import ModuleType

from pynenc import Pynenc

from tests.runner.conftest import MANAGE, PROJECT, PROJECT_SETTINGS, Runners, wait_until


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MANAGE), "pynenc_status", *args],
        cwd=PROJECT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": PROJECT_SETTINGS},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_is_unhealthy_without_a_runner(app: Pynenc) -> None:
    done = _status("--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["healthy"] is False
    assert any("no live runner" in p for p in report["problems"])


def test_status_is_healthy_with_a_runner(app: Pynenc, tasks: ModuleType, runners: Runners) -> None:
    runners.start(processes=2)
    invocation = tasks.add(2, 3)
    assert invocation.result == 5
    done = wait_until(lambda: (d := _status()).returncode == 0 and d, 60, runners.diag)
    assert "2 alive" in done.stdout or "3 alive" in done.stdout, done.stdout
    assert "success: " in done.stdout  # ours, and pynenc's recovery tasks the cron fired
