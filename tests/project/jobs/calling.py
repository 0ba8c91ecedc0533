"""Tasks of the Celery-style calling tests (``tests/calling``). Each execution appends
``<event> <pid> <unix time>`` to ``record_path``: what ran, where and when, from the
task's own side."""

import os
import time

from pynenc_django import app


def record(path: str, event: str) -> None:
    with open(path, "a") as records:
        records.write(f"{event} {os.getpid()} {time.time():.6f}\n")


def records(path: str) -> list[tuple[str, int, float]]:
    try:
        with open(path) as lines:
            return [(e, int(p), float(t)) for e, p, t in (line.split() for line in lines)]
    except FileNotFoundError:
        return []


@app.task
def stamp(label: str, record_path: str) -> str:
    record(record_path, label)
    return label


class Flaky(Exception):
    pass


@app.task(retry_for=(Flaky,), max_retries=3)
def flaky(failures: int, record_path: str) -> int:
    """Fails ``failures`` times, then returns how many attempts it took."""
    attempt = len(records(record_path))
    record(record_path, f"attempt-{attempt}")
    if attempt < failures:
        raise Flaky(f"attempt {attempt}")
    return attempt + 1


@app.task
def waits_for_delayed(countdown: float, record_path: str) -> float:
    """Calls ``stamp`` with a countdown and waits for it: the child must not run early
    in its parent's wait. Returns the child's due time."""
    due = time.time() + countdown
    child = stamp.apply_async(args=("child", record_path), countdown=countdown)
    _ = child.result
    return due
