"""Celery with Redis (broker and result backend), measured by ``bench/harness.py``.

    .venv/bin/python -m bench.peers.celery_bench [--run-index K] [--tasks 2000] \
        [--workers 2] [--latency-calls 50] [--out FILE.json] [--quick]

"W workers" = one ``celery worker --pool prefork --concurrency W`` (W child processes, the
usual way to run W Celery workers on one machine), with Celery's defaults otherwise:
prefetch multiplier 4, acks on receipt, JSON, mingle/gossip/heartbeat on; log level
WARNING (no per-task "succeeded" lines). The task is ``noop(i) -> i``
(``bench.peers.celery_app``), a plain ``def`` like every system's.

The client is this process. Single submit: ``noop.delay(i)`` per task; batch:
``group(noop.s(i) for ...).apply_async()`` (Celery has no bulk publish; a group sends its
messages through one producer). Results are read the normal way, through the Redis result
backend (pub/sub, no polling): ``AsyncResult.get()`` for each, in submit order, after single
submits; ``GroupResult.get()`` after a batch; ``noop.delay(i).get()`` for a round trip.

Statements: every Redis command the client, the worker's main process and each pool child
send (``bench/wirecount.py``), in the counting phase only. Redis db ``--redis-url``
(default 5) is flushed at the start of each run (the default queue's binding re-declared),
emptied between phases and flushed at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness, ready, wirecount

BINDING_PREFIX = b"_kombu.binding."


class CeleryBench(harness.Bench):
    system = "celery-redis"
    submit_description = (
        "single: noop.delay(i) per task; batch: group(noop.s(i) for all tasks).apply_async()"
    )
    wait_description = (
        "Redis result backend (pub/sub): AsyncResult.get() for each after single submits, "
        "GroupResult.get() after a batch, .get() per round trip"
    )

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.url: str = args.redis_url
        self.redis: Any = None
        self.server = ""
        self.app: Any = None
        self.noop: Any = None
        self.notes += [
            "W workers = one `celery worker --pool prefork --concurrency W` (W pool "
            "processes and the main process that consumes from Redis).",
            "Celery's defaults: prefetch multiplier 4, acks on receipt (not acks_late), JSON, "
            "mingle/gossip/heartbeat on; --loglevel WARNING. Task: def noop(i) -> i.",
            "Redis is broker and result backend (same db). Client: the benchmark's process.",
            "Statements = Redis commands sent by the client, the worker's main process and "
            "its pool children (each pipeline command counted; connection handshakes not).",
        ]

    # --- store

    def connect(self) -> None:
        self.redis = harness.redis_client(self.url)
        self.server = f"Redis {self.redis.info('server')['redis_version']}"
        os.environ["BENCH_CELERY_REDIS_URL"] = self.url
        from bench.peers.celery_app import app, noop

        self.app, self.noop = app, noop

    def database(self) -> str:
        return self.server

    def label(self) -> str:
        return f"Celery {harness.versions('celery')['celery']} with {self.server}"

    def versions(self) -> dict[str, str]:
        return harness.versions("celery", "kombu", "redis", "billiard")

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
        env = {"BENCH_CELERY_REDIS_URL": self.url, ready.READY_DIR_ENV: str(ready_dir)}
        if count_dir is not None:
            env[wirecount.COUNT_DIR_ENV] = str(count_dir)
        cmd = [
            harness.PYTHON,
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
        proc = harness.start_process(cmd, harness.child_env(env), self.log_path(f"worker{count}"))
        harness.wait_ready_files(ready_dir, [proc], 1, f"celery worker (concurrency {count})")
        return [proc]

    # --- client

    def submit_single(self, n: int, start: int = 0) -> Any:
        return [self.noop.delay(i) for i in range(start, start + n)]

    def submit_batch(self, n: int) -> Any:
        from celery import group

        return group(self.noop.s(i) for i in range(n)).apply_async()

    def read_results(self, handles: Any, n: int, batch: bool) -> None:
        timeout = max(120.0, n / 5)
        if batch:
            values = handles.get(timeout=timeout)
        else:
            values = [r.get(timeout=timeout) for r in handles]
        if sorted(values) != list(range(n)):
            raise RuntimeError("celery: wrong results")

    def read_each(self, handles: Any, n: int, start: int = 0) -> None:
        values = [r.get(timeout=30) for r in handles]
        if values != list(range(start, start + n)):
            raise RuntimeError("celery: wrong results")

    def done_count(self, handles: Any) -> int:
        results = handles.results if hasattr(handles, "results") else handles
        keys = [self.app.backend.get_key_for_task(r.id) for r in results]
        return sum(int(self.redis.exists(*keys[i : i + 500])) for i in range(0, len(keys), 500))

    def round_trip(self, i: int) -> None:
        value = self.noop.delay(i).get(timeout=30)
        if value != i:
            raise RuntimeError(f"celery: wrong result {value!r} for {i}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_options(parser)
    parser.add_argument("--redis-url", default=harness.DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    harness.finish_options(parser, args)
    return harness.main(CeleryBench(args, harness.work_dir("celery")))


if __name__ == "__main__":
    sys.exit(main())
