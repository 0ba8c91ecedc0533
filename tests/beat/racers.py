"""Entry points for spawned processes racing on the schedule (see :mod:`tests.racers`):
each is a fresh interpreter that sets Django up, builds the project's app, waits at a
barrier so all hit the database together, and reports how many invocations it fired and
the errors it logged (a racer that loses must lose quietly, not by a failed insert)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any


def evaluate(now_iso: str, barrier: Any, results: Any) -> None:
    import os

    import django

    # As a runner of the test project: its tasks app is installed (the same database).
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
    django.setup()
    from pynenc_django.beat.scheduler import run_due_periodic_tasks
    from pynenc_django.project import get_app

    errors: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: errors.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("pynenc_django.beat").addHandler(handler)
    app = get_app()
    now = datetime.fromisoformat(now_iso)
    barrier.wait()
    results.put((run_due_periodic_tasks(app, now, "racer"), errors))
