"""``make serve``: the example's runners and development server come up, the admin answers,
and one SIGTERM stops all of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.example.test_demo import EXAMPLE, manage


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="the example always runs on its own SQLite file: once, in the SQLite pass, is enough",
)
@pytest.mark.timeout(180)
def test_serve_starts_runners_and_admin_and_stops_on_sigterm(tmp_path: Path) -> None:
    assert manage(tmp_path, "migrate", "--noinput", timeout=120).returncode == 0
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE") and not k.startswith("PYNENC__")
    }
    env.update(EXAMPLE_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}", "--processes", "1"],
        cwd=EXAMPLE,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/") as reply:
                    status = reply.status
            except OSError:
                time.sleep(0.5)
        assert status == 200, (tmp_path / "serve.log").read_text()
        children = psutil.Process(serve.pid).children(recursive=True)
        assert any("pynenc_runner" in " ".join(c.cmdline()) for c in children)

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left running: {alive}\n{(tmp_path / 'serve.log').read_text()}"
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()
    assert (
        "Stopped: the runners and the development server." in (tmp_path / "serve.log").read_text()
    )
