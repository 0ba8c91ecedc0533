"""Celery with Redis (broker and result backend), measured like pynenc-django (``common.py``).

    .venv/bin/python -m bench.peers.celery_bench --runs 3 --tasks 2000 \
        --workers 1,2,4 --latency-calls 50 --out FILE.json [--quick]

"W workers" = one ``celery worker --pool prefork --concurrency W`` (W child processes, the
usual way to run W Celery workers on one machine), with Celery's defaults otherwise:
prefetch multiplier 4, acks on receipt, JSON, mingle/gossip/heartbeat on; log level
WARNING (no per-task "succeeded" lines). The task is ``noop(i) -> i``
(``bench.peers.celery_app``).

The client is this process: ``noop.apply_async((i,))`` per task for the single rate, and a
``group`` of all ``--tasks`` signatures for the batch rate and the throughput runs (Celery
has no bulk publish; a group sends its messages through one producer). Results are read
the normal way, through the Redis result backend: ``GroupResult.get()`` for throughput,
``AsyncResult.get()`` for a round trip (both wait on Redis pub/sub, no polling).

Redis db ``--redis-url`` (default 5) is flushed at the start of each run (the default
queue's binding re-declared), emptied between phases and flushed at the end. Statements
are not counted: Redis counts commands per server (``INFO commandstats``), not per db, and
the server is shared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.peers import common

BINDING_PREFIX = b"_kombu.binding."


class CeleryBench(common.PeerBench):
    system = "celery-redis"
    submit_description = (
        "single: noop.apply_async((i,)) per task; batch and throughput: "
        "group(noop.s(i) for all tasks).apply_async()"
    )
    wait_description = (
        "Redis result backend: throughput GroupResult.get(); round trip AsyncResult.get() "
        "(pub/sub, no polling)"
    )

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.url: str = args.redis_url
        self.redis: Any = None
        self.server = ""
        self.app: Any = None
        self.noop: Any = None
        self.notes += [
            "W workers = one `celery worker --pool prefork --concurrency W`.",
            "Celery defaults: prefetch multiplier 4, acks on receipt (not acks_late), JSON, "
            "mingle/gossip/heartbeat on; --loglevel WARNING. Task: noop(i) -> i.",
            "Redis is broker and result backend (same db). Client: harness process. Single "
            "submit = apply_async per task; batch and throughput submit = one group of all "
            "tasks (no bulk publish in Celery: the group reuses one producer).",
            "Results: GroupResult.get() / AsyncResult.get() on the Redis backend (pub/sub).",
            "Statements: null. Redis command counts are server-wide (INFO commandstats), "
            "and the server is shared.",
            "Redis db flushed at the start of each run (queue binding re-declared), emptied "
            "between phases (bindings kept), flushed at the end.",
        ]

    # --- store

    def connect(self) -> None:
        self.redis = common.redis_client(self.url)
        self.server = f"Redis {self.redis.info('server')['redis_version']}"
        import os

        os.environ["BENCH_CELERY_REDIS_URL"] = self.url
        from bench.peers.celery_app import app, noop

        self.app, self.noop = app, noop

    def database(self) -> str:
        return self.server

    def label(self) -> str:
        return f"Celery {common.versions('celery')['celery']} with {self.server}"

    def versions(self) -> dict[str, str]:
        return common.versions("celery", "kombu", "redis", "billiard")

    def fresh_store(self) -> None:
        self.redis.flushdb()
        # FLUSHDB removed kombu's binding of the default queue; a producer that already
        # declared it will not again, and its messages would be undeliverable.
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in self.app.amqp.queues.values():
                queue.bind(channel).declare()

    def clear_jobs(self) -> None:
        keys = [k for k in self.redis.scan_iter(count=1000) if not k.startswith(BINDING_PREFIX)]
        for start in range(0, len(keys), 1000):
            self.redis.delete(*keys[start : start + 1000])

    def drop_store(self) -> None:
        if self.redis is not None:
            self.redis.flushdb()

    def close(self) -> None:
        if self.app is not None:
            self.app.close()

    # --- workers

    def start_workers(
        self, count: int, count_dir: Path | None = None
    ) -> list[subprocess.Popen[bytes]]:
        ready_dir = self.work / f"ready-{time.time_ns()}"
        ready_dir.mkdir()
        env = {"BENCH_CELERY_REDIS_URL": self.url, common.READY_DIR_ENV: str(ready_dir)}
        cmd = [
            common.PYTHON,
            "-m",
            "celery",
            "-A",
            "bench.peers.celery_app",
            "worker",
            "--pool=prefork",
            f"--concurrency={count}",
            "--loglevel=WARNING",
            f"--hostname=bench{count}-{time.time_ns() % 10**9}@%h",
        ]
        proc = common.start_process(cmd, common.child_env(env), self.log_path(f"worker{count}"))
        common.wait_until(
            lambda: common.ready_files(ready_dir) >= 1,
            f"celery worker (concurrency {count}) to be ready",
            timeout=common.READY_TIMEOUT_SEC,
            procs=[proc],
            interval=0.1,
        )
        return [proc]

    # --- client

    def submit_single(self, n: int) -> float:
        started = time.perf_counter()
        results = [self.noop.apply_async((i,)) for i in range(n)]
        elapsed = time.perf_counter() - started
        del results  # unsubscribing from their result channels is not part of the submit
        return elapsed

    def submit_batch(self, n: int) -> float:
        from celery import group

        started = time.perf_counter()
        result = group(self.noop.s(i) for i in range(n)).apply_async()
        elapsed = time.perf_counter() - started
        del result
        return elapsed

    def throughput(self, n: int) -> float:
        from celery import group

        started = time.perf_counter()
        result = group(self.noop.s(i) for i in range(n)).apply_async()
        values = result.get(timeout=max(120.0, n / 5))
        elapsed = time.perf_counter() - started
        if sorted(values) != list(range(n)):
            raise RuntimeError("celery: wrong results")
        return elapsed

    def round_trip(self, i: int) -> float:
        started = time.perf_counter()
        value = self.noop.apply_async((i,)).get(timeout=30)
        elapsed = time.perf_counter() - started
        if value != i:
            raise RuntimeError(f"celery: wrong result {value!r} for {i}")
        return elapsed


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__ or "", argv, redis=True)
    return common.main(CeleryBench, args)


if __name__ == "__main__":
    sys.exit(main())
