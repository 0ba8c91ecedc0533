import multiprocessing

from django.apps import AppConfig

BROKEN = "this worker cannot start: tests.project_noguard.broken fails in worker processes"


class BrokenInWorkersConfig(AppConfig):
    """An app whose ``ready()`` fails in every spawned worker process, but not in the
    runner itself: a worker that can never start, for any reason but the main guard."""

    name = "tests.project_noguard.broken"
    label = "broken_in_workers"
    default = True

    def ready(self) -> None:
        if multiprocessing.parent_process() is not None:
            raise RuntimeError(BROKEN)
