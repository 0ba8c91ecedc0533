"""The Celery app of the peer benchmark (``celery -A bench.peers.celery_app worker``).

Redis is both broker and result backend (``BENCH_CELERY_REDIS_URL``, the bench's db
number), as Celery's "first steps" configure it; everything else is Celery's defaults
(prefork pool, prefetch multiplier 4, early acks, JSON). ``worker_ready`` marks the worker
ready (``bench/ready.py``) once the pool is up. With ``BENCH_WIRE_COUNT_DIR`` set (the
counting phase only), the main process and every pool child count the Redis commands they
send (``bench/wirecount.py``; the children start from zero when forked).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from bench import ready, wirecount

wirecount.install_from_env()

REDIS_ENV = "BENCH_CELERY_REDIS_URL"

_url = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/5")
app = Celery("bench_peers", broker=_url, backend=_url)
app.conf.broker_connection_retry_on_startup = True


@app.task(name="bench.noop")
def noop(i: int) -> int:
    return i


@worker_ready.connect
def _mark_ready(**kwargs: Any) -> None:
    ready.mark()
