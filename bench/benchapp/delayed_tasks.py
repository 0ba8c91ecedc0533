"""The delayed-invocation benchmark's task (``bench/delayed.py``).

Not autodiscovered (the module is not called ``tasks``): the client imports it, and a
runner imports it by name when it first runs it (pynenc resolves a task from its id,
``bench.benchapp.delayed_tasks.started_at``).
"""

import os
import time

from pynenc_django import app


@app.task
def started_at(i: int) -> list[float]:
    """Its own record of when it started and where: ``[time.time(), pid]``, so the start
    delay after its due time is measured by the task, not by a poll. ``i`` keeps every
    call distinct."""
    return [time.time(), float(os.getpid())]
