"""The Celery app of the peer benchmark (``celery -A bench.peers.celery_app worker``).

Redis is both broker and result backend (``BENCH_CELERY_REDIS_URL``, the bench's db
number), as Celery's "first steps" configure it; everything else is Celery's defaults
(prefork pool, prefetch multiplier 4, early acks, JSON). ``worker_ready`` touches
``$BENCH_PEER_READY_DIR/<pid>.ready`` once the pool is up, so the benchmark knows when
a worker can take work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready

REDIS_ENV = "BENCH_CELERY_REDIS_URL"
READY_DIR_ENV = "BENCH_PEER_READY_DIR"

_url = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/5")
app = Celery("bench_peers", broker=_url, backend=_url)
app.conf.broker_connection_retry_on_startup = True


@app.task(name="bench.noop")
def noop(i: int) -> int:
    return i


@worker_ready.connect
def _mark_ready(**kwargs: Any) -> None:
    if directory := os.environ.get(READY_DIR_ENV):
        Path(directory, f"{os.getpid()}.ready").touch()
