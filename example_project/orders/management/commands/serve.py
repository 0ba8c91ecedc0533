"""``manage.py serve``: the shop with its background work, for browsing the admin.

Starts the two runners the demo uses (identical: every queue, ``--processes`` workers each;
output in ``var/logs/``), then Django's development server in the foreground. When the server
stops (Ctrl-C), the runners are stopped with SIGTERM, and killed if they do not exit.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from orders.management.commands.demo import ADMIN_URL, RUNNERS
from orders.management.commands.ensure_admin import DEMO_PASSWORD, DEMO_USERNAME
from orders.runners import MANAGE_PY, RunnerGroup, signals_raise_keyboard_interrupt


class Command(BaseCommand):
    help = (
        "Run the shop: two pynenc runners in the background and the development server "
        "(runserver) in the foreground; Ctrl-C stops all of them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--processes", type=int, default=2, help="Worker processes per runner (2)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        log_dir = settings.VAR_DIR / "logs"
        server = None
        try:
            with signals_raise_keyboard_interrupt(), RunnerGroup(log_dir) as runners:
                for name in RUNNERS:
                    process = runners.start(name, "--processes", str(options["processes"]))
                    self.stdout.write(
                        f"{name} pid {process.pid}: manage.py pynenc_runner "
                        f"{' '.join(process.args)} (log: {process.log_path})"
                    )
                self.stdout.write(
                    f"Admin: {ADMIN_URL} (login {DEMO_USERNAME} / {DEMO_PASSWORD}). Select "
                    "new orders and run the action 'Process the selected new orders'."
                )
                server = subprocess.Popen(
                    [sys.executable, str(MANAGE_PY), "runserver", options["addrport"]],
                    cwd=MANAGE_PY.parent,
                )
                reported: set[str] = set()
                while server.poll() is None:
                    for process in runners.exited():
                        if process.name not in reported:
                            reported.add(process.name)
                            self.stderr.write(
                                f"{process.name} exited with code {process.popen.returncode}; "
                                f"last lines of {process.log_path}:\n{process.tail()}"
                            )
                    time.sleep(0.5)
                self.stdout.write("Stopping the runners")
                codes = runners.stop()
                self.stdout.write(", ".join(f"{n} exit code {c}" for n, c in codes.items()))
        except KeyboardInterrupt:
            # Ctrl-C reached runserver too; the runners were stopped on the way out.
            self.stdout.write("\nStopped: the runners and the development server.")
        finally:
            if server is not None and server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
