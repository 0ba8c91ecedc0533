"""Tasks on a queue of their own that ``PYNENC["queues"]`` does not declare.

Autodiscovered only with ``tests.project.settings_queues`` (``tasks_module = "queues"``),
so the other runner tests' processes never register them. Each execution appends
``<label> <pid>`` to ``record_path``.
"""

import os

from pynenc_django import app


def _record(record_path: str, label: str) -> None:
    with open(record_path, "a") as records:
        records.write(f"{label} {os.getpid()}\n")


@app.task(queue="emails")
def send_email(to: str, record_path: str) -> str:
    _record(record_path, f"email-{to}")
    return f"sent to {to}"


@app.task
def on_default_queue(label: str, record_path: str) -> str:
    _record(record_path, label)
    return label
