"""Tasks of the runner tests' project, declared the documented way."""

import time

from pynenc_django import app


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def sleep_task(seconds: float, tag: str = "") -> str:
    time.sleep(seconds)
    return tag


@app.task
def square(i: int) -> int:
    time.sleep(0.1)
    return i * i


@app.task
def fan_out(n: int) -> int:
    """Waits on ``n`` children: needs a free worker for them, never deadlocks."""
    children = [square(i) for i in range(n)]
    return sum(child.result for child in children)


try:  # Django >= 6.0: the same kind of work through Django's own Tasks API
    from django.tasks import task
except ImportError:  # Django 5.2
    task = None

if task is not None:

    @task
    def django_multiply(x: int, y: int) -> int:
        return x * y

    @task(priority=10, queue_name="default")
    def django_fail(message: str) -> None:
        raise ValueError(message)

    @task(takes_context=True)
    def django_attempt(context: object, tag: str) -> int:
        return context.attempt  # type: ignore[attr-defined]


def _record(path: str, event: str) -> None:
    """One line per event, appended in one write: ``<event> <pid> <unix time>``."""
    import os

    with open(path, "a") as records:
        records.write(f"{event} {os.getpid()} {time.time():.6f}\n")


@app.task
def recorded_sleep(seconds: float, record_path: str) -> str:
    """Writes a ``start`` line to ``record_path``, sleeps, then a ``finish`` line: every
    attempt is on record, a killed one with no finish."""
    _record(record_path, "start")
    time.sleep(seconds)
    _record(record_path, "finish")
    return record_path


@app.task
def scheduled(schedule: int, record_path: str) -> int:
    """A scheduled job's own record: ``<schedule> <invocation id> <pid> <unix time>``."""
    _record(record_path, f"{schedule} {scheduled.invocation.invocation_id}")
    return schedule


@app.task
def fail(message: str) -> None:
    """An ordinary task failure."""
    raise ValueError(message)
