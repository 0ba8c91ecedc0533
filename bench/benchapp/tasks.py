"""The benchmark's tasks, declared the documented way (autodiscovered by pynenc_django)."""

import time

from pynenc_django import app


@app.task
def stamp() -> float:
    """Returns when it started, so the client can compute the wake-up latency."""
    return time.time()


@app.task
def noop(i: int = 0) -> int:
    """Does nothing but echo its argument: throughput then measures pynenc-django alone,
    and the client can check every result came back (they sum to a known total)."""
    return i
