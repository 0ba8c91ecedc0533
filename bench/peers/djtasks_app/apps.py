"""Hooks for the ``db_worker`` processes under test, off unless their variables are set.

* ``BENCH_PEER_READY_DIR``: touch ``<dir>/<pid>.ready`` once the process has executed its
  first SQL statement. In ``db_worker`` that is the first poll for tasks, so the worker's
  loop is running (it has no other "ready" signal).
* ``PYNENC_BENCH_COUNT_DIR``: count every statement of every Django connection and dump the
  counts to ``<dir>/<pid>.json``, with pynenc-django's own benchmark code
  (``bench.benchapp.counting``), so the counts mean the same as in its reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.apps import AppConfig

READY_DIR_ENV = "BENCH_PEER_READY_DIR"
_ready_marked = False


def _mark_ready_after_first_statement(
    execute: Any, sql: str, params: Any, many: bool, context: Any
) -> Any:
    global _ready_marked
    try:
        return execute(sql, params, many, context)
    finally:
        if not _ready_marked:
            _ready_marked = True
            Path(os.environ[READY_DIR_ENV], f"{os.getpid()}.ready").touch()


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _mark_ready_after_first_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(_mark_ready_after_first_statement)


class DjtasksAppConfig(AppConfig):
    name = "bench.peers.djtasks_app"
    label = "peers_djtasks"

    def ready(self) -> None:
        if os.environ.get(READY_DIR_ENV):
            from django.db.backends.signals import connection_created

            connection_created.connect(
                _on_connection_created, weak=False, dispatch_uid="bench-peer-ready"
            )
        from bench.benchapp.counting import install_django_counting

        install_django_counting()  # a no-op unless PYNENC_BENCH_COUNT_DIR is set
