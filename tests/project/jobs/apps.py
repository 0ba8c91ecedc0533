import os
import sys
import time

from django.apps import AppConfig

#: Test-only hook: seconds every atomic-service run spends before doing its work, so a
#: test can SIGKILL a runner while it holds the cluster-wide atomic-service slot.
SLOW_ATOMIC_ENV = "PYNENC_DJANGO_TEST_SLOW_ATOMIC_SEC"


class JobsConfig(AppConfig):
    name = "tests.project.jobs"
    label = "jobs"
    default = True

    def ready(self) -> None:
        delay = float(os.environ.get(SLOW_ATOMIC_ENV) or 0)
        if delay > 0:
            slow_down_atomic_services(delay)


def slow_down_atomic_services(delay: float) -> None:
    from pynenc_django.trigger import DjangoTrigger

    original = DjangoTrigger.trigger_loop_iteration
    if getattr(original, "_slowed_down", False):
        return

    def trigger_loop_iteration(self, atomic_service_run):  # type: ignore[no-untyped-def]
        print(
            f"test hook: atomic-service-run:{atomic_service_run.atomic_service_run_id} "
            f"runner:{atomic_service_run.runner_id} sleeping {delay:g}s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(delay)
        return original(self, atomic_service_run)

    trigger_loop_iteration._slowed_down = True  # type: ignore[attr-defined]
    DjangoTrigger.trigger_loop_iteration = trigger_loop_iteration  # type: ignore[method-assign]
