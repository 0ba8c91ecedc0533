"""What one hop between processes costs on this machine, idle and busy: the unit a short
task's round trip is made of (``make bench-hops``).

A round trip (submit, the worker's claim and run, the client's read) is a chain of hops:
a process sends, another one wakes and answers. Back to back, a hop costs what the two
processes do; after an idle gap (the round-trip phase waits 0.05-0.2 s before each call)
each woken process pays the machine's wake-up latency too. This script measures both, for
the hops the systems of ``make bench`` are made of:

* a request and its answer: Redis ``PING``; PostgreSQL ``SELECT 1``;
* an announcement from one process to another that waits for it: Redis ``PUBLISH`` to a
  subscribed process; PostgreSQL ``NOTIFY`` to a process that ``LISTEN``\\s (relayed by
  the listener's server backend: one more process woken).

Each figure: the median of ``--calls`` hops, back to back ("hot") and after ``--gap``
seconds idle ("cold"), one way for announcements (the listener's receipt time minus the
sender's, one clock). Usage::

    .venv/bin/python -m bench.hops [--calls 200] [--gap 0.1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CHANNEL = "pynenc_bench_hops"


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def request_hop(call: Callable[[], Any], calls: int, gap: float) -> float:
    """Median ms of ``call`` (one request and its answer), each after ``gap`` s idle."""
    samples = []
    for _ in range(calls):
        if gap:
            time.sleep(gap)
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return _median_ms(samples)


def _listen_postgres(ready: Any, results: Any, calls: int) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        ready.set()
        for notify in conn.notifies(stop_after=calls, timeout=60):
            results.put(time.time() - float(notify.payload))


def _listen_redis(ready: Any, results: Any, calls: int) -> None:
    import redis

    pubsub = redis.Redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    pubsub.get_message(timeout=5)  # the subscription's confirmation
    ready.set()
    received = 0
    while received < calls:
        message = pubsub.get_message(timeout=60)
        if message is not None:
            results.put(time.time() - float(message["data"]))
            received += 1


def announcement_hop(kind: str, calls: int, gap: float) -> float:
    """Median one-way ms from the sender's announcement to a waiting process's receipt."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    target = _listen_postgres if kind == "postgresql" else _listen_redis
    listener = ctx.Process(target=target, args=(ready, results, calls))
    listener.start()
    try:
        if not ready.wait(30):
            raise RuntimeError(f"the {kind} listener did not subscribe")
        if kind == "postgresql":
            import psycopg

            conn = psycopg.connect(POSTGRES_URL, autocommit=True)

            def send() -> None:
                conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, repr(time.time())])
        else:
            import redis

            client = redis.Redis()

            def send() -> None:
                client.publish(CHANNEL, repr(time.time()))

        samples = []
        for _ in range(calls):
            time.sleep(gap or 0.002)  # never back to back: the listener must be waiting
            send()
            samples.append(results.get(timeout=30))
        return _median_ms(samples)
    finally:
        listener.join(10)
        if listener.is_alive():
            listener.kill()


def measure(calls: int, gap: float) -> dict[str, dict[str, float]]:
    import psycopg
    import redis

    client = redis.Redis()
    conn = psycopg.connect(POSTGRES_URL, autocommit=True)
    figures: dict[str, dict[str, float]] = {
        "Redis PING": {},
        "PostgreSQL SELECT 1": {},
        "Redis PUBLISH to a subscribed process": {},
        "PostgreSQL NOTIFY to a LISTENing process": {},
    }
    for label, idle in (("hot", 0.0), ("cold", gap)):
        figures["Redis PING"][label] = request_hop(client.ping, calls, idle)
        figures["PostgreSQL SELECT 1"][label] = request_hop(
            lambda: conn.execute("SELECT 1").fetchone(), calls, idle
        )
    # An announcement is always to a process that waits: only its sender can be "hot".
    figures["Redis PUBLISH to a subscribed process"]["cold"] = announcement_hop("redis", calls, gap)
    figures["PostgreSQL NOTIFY to a LISTENing process"]["cold"] = announcement_hop(
        "postgresql", calls, gap
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.1, help="idle seconds before a cold hop")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    figures = measure(args.calls, args.gap)
    print(f"| hop ({args.calls} each, median ms) | back to back | after {args.gap:g} s idle |")
    print("|---|---:|---:|")
    for hop, values in figures.items():
        hot = f"{values['hot']:.3f}" if "hot" in values else "–"
        print(f"| {hop} | {hot} | {values['cold']:.3f} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"calls": args.calls, "gap": args.gap, "figures": figures}, out, indent=1)


if __name__ == "__main__":
    main()
