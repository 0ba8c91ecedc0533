"""Hooks for the ``db_worker`` processes under test, off unless their variables are set.

* ``BENCH_READY_DIR``: mark the process ready after its first SQL statement
  (``bench/ready.py``). In ``db_worker`` that is the first poll for tasks, so the worker's
  loop is running (it has no other "ready" signal).
* ``BENCH_WIRE_COUNT_DIR``: count every statement the process sends (``bench/wirecount.py``,
  the counting phase only).
"""

from __future__ import annotations

from django.apps import AppConfig

from bench import ready, wirecount


class DjtasksAppConfig(AppConfig):
    name = "bench.peers.djtasks_app"
    label = "peers_djtasks"

    def ready(self) -> None:
        wirecount.install_from_env()
        ready.install_django()
