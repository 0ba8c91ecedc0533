"""The benchmark's task, declared the documented way (autodiscovered by pynenc_django)."""

import time

from pynenc_django import app


@app.task
def stamp() -> float:
    """Returns when it started, so the client can compute the wake-up latency."""
    return time.time()
