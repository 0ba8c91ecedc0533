"""The fan-in benchmark's tasks (``bench/fan_in.py``): parents that wait for their children.

Not autodiscovered (the module is not called ``tasks``): the client imports it, and a
runner imports it by name when it first runs one of its tasks (pynenc resolves a task from
its id, ``bench.benchapp.fan_in_tasks.<name>``).

``tag`` (the parent's index) only makes every call distinct, so no two invocations share
their arguments; child ``tag * n + i`` belongs to parent ``tag``.
"""

from pynenc_django import app


@app.task
def child(i: int) -> int:
    """Trivial: the fan-in measures the waits, not the work."""
    return 2 * i


@app.task
def parent(n: int, tag: int = 0) -> int:
    """Submits its ``n`` children at once and waits for them as a group."""
    group = child.parallelize([(tag * n + i,) for i in range(n)])
    return sum(group.results)


@app.task
def parent_sequential(n: int, tag: int = 0) -> int:
    """Submits its ``n`` children one by one, then waits for each in turn (``.result``)."""
    return sum(inv.result for inv in [child(tag * n + i) for i in range(n)])


def expected(n: int, tag: int) -> int:
    """What ``parent(n, tag)`` and ``parent_sequential(n, tag)`` return."""
    return 2 * (tag * n * n + n * (n - 1) // 2)
