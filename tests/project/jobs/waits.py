"""Tasks that wait for other tasks, recording each execution themselves.

Each execution appends ``<label> <event> <pid> <unix time>`` to ``record_path`` in one
write (``start``, then ``finish`` unless it was killed), so a test can check from the
tasks' own records which process ran what, nested in which wait, and how often.
"""

import os
import time

from pynenc_django import app


def _record(record_path: str, label: str, event: str) -> None:
    if record_path:
        with open(record_path, "a") as records:
            records.write(f"{label} {event} {os.getpid()} {time.time():.6f}\n")


@app.task
def double(x: int, record_path: str = "", seconds: float = 0.0) -> int:
    _record(record_path, f"double-{x}", "start")
    time.sleep(seconds)
    _record(record_path, f"double-{x}", "finish")
    return 2 * x


@app.task
def parent_one_by_one(n: int, record_path: str = "", seconds: float = 0.0) -> int:
    """``.result`` of each child in turn (the README's first example of a wait)."""
    _record(record_path, "parent", "start")
    children = [double(i, record_path, seconds) for i in range(n)]
    total = sum(child.result for child in children)
    _record(record_path, "parent", "finish")
    return total


@app.task
def parent_group(n: int, label: str = "", record_path: str = "") -> int:
    """``parallelize(...).results``: one wait for the whole group."""
    _record(record_path, f"parent-{label}", "start")
    total = sum(double.parallelize([(i, record_path) for i in range(n)]).results)
    _record(record_path, f"parent-{label}", "finish")
    return total


@app.task
async def double_async(x: int) -> int:
    return 2 * x


@app.task
async def parent_async(n: int) -> int:
    """An async task awaiting sync and async children."""
    total = 0
    for i in range(n):
        total += await double(i).async_result()
        total += await double_async(i).async_result()
    return total


@app.task
def tree(depth: int, fan_out: int, path: str, record_path: str) -> int:
    """A tree of waits ``depth`` levels deep; returns the number of its leaves."""
    _record(record_path, f"tree-{path}", "start")
    if depth == 0:
        leaves = 1
    else:
        subtrees = [tree(depth - 1, fan_out, f"{path}.{k}", record_path) for k in range(fan_out)]
        leaves = sum(subtree.result for subtree in subtrees)
    _record(record_path, f"tree-{path}", "finish")
    return leaves
