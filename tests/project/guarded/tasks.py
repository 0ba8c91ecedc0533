"""Tasks under running-concurrency control that record each execution themselves.

Every execution appends ``task key start end pid`` (wall-clock seconds) to a file of its
own process under ``record_dir``, so a test can check from the tasks' own records, not
from our tables, that no two executions of one key overlapped.
"""

import os
import time
from pathlib import Path

from pynenc import ConcurrencyControlType

from pynenc_django import app

KEYS = ConcurrencyControlType.KEYS
TASK = ConcurrencyControlType.TASK


def _record(task: str, key: str, seconds: float, record_dir: str) -> None:
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    with open(Path(record_dir) / f"{os.getpid()}.log", "a") as out:
        out.write(f"{task} {key} {start:.6f} {end:.6f} {os.getpid()}\n")


@app.task(running_concurrency=KEYS, key_arguments=("account",), reroute_on_concurrency_control=True)
def by_key(account: str, i: int, seconds: float, record_dir: str) -> int:
    _record("by_key", account, seconds, record_dir)
    return i


@app.task(running_concurrency=KEYS, key_arguments=("account",))
def by_key_or_drop(account: str, i: int, seconds: float, record_dir: str) -> int:
    _record("by_key_or_drop", account, seconds, record_dir)
    return i


@app.task(running_concurrency=TASK, reroute_on_concurrency_control=True)
def whole_task(i: int, seconds: float, record_dir: str) -> int:
    _record("whole_task", "-", seconds, record_dir)
    return i


@app.task(running_concurrency=TASK)
def whole_task_or_drop(i: int, seconds: float, record_dir: str) -> int:
    _record("whole_task_or_drop", "-", seconds, record_dir)
    return i


@app.task(running_concurrency=ConcurrencyControlType.ARGUMENTS, reroute_on_concurrency_control=True)
def same_arguments(account: str, seconds: float, record_dir: str) -> str:
    _record("same_arguments", account, seconds, record_dir)
    return account
