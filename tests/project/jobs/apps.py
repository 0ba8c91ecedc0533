import os
import sys
import time

from django.apps import AppConfig

#: Test-only hook: seconds every atomic-service run spends before doing its work, so a
#: test can SIGKILL a runner while it holds the cluster-wide atomic-service slot.
SLOW_ATOMIC_ENV = "PYNENC_DJANGO_TEST_SLOW_ATOMIC_SEC"
#: Test-only hook: a file every new database connection of the process is logged to,
#: one line ``<pid> <alias> <task id of the invocation running, or ->``
#: (``tests/runner/test_task_connections.py``).
CONNECTION_LOG_ENV = "PYNENC_DJANGO_TEST_CONNECTION_LOG"
#: Test-only hook: a file every claim of the process is logged to, one line
#: ``<pid> <invocations claimed> <their task ids, comma-separated>``
#: (``tests/runner/test_wake_dispatch.py``).
CLAIM_LOG_ENV = "PYNENC_DJANGO_TEST_CLAIM_LOG"


class JobsConfig(AppConfig):
    name = "tests.project.jobs"
    label = "jobs"
    default = True

    def ready(self) -> None:
        delay = float(os.environ.get(SLOW_ATOMIC_ENV) or 0)
        if delay > 0:
            slow_down_atomic_services(delay)
        if path := os.environ.get(CONNECTION_LOG_ENV):
            log_new_connections(path)
        if path := os.environ.get(CLAIM_LOG_ENV):
            log_claims(path)


def log_new_connections(path: str) -> None:
    from django.db.backends.signals import connection_created
    from pynenc import context

    def log(sender: object, connection: object, **kwargs: object) -> None:
        running = [  # pynenc keeps the running invocation per app id; tests have one app
            invocation.task.task_id.key
            for invocation in context._get_dist_inv_context_storage().values()
            if invocation is not None
        ]
        task = running[0] if running else "-"
        with open(path, "a") as log_file:
            log_file.write(f"{os.getpid()} {connection.alias} {task}\n")  # type: ignore[attr-defined]

    connection_created.connect(log, weak=False)


def log_claims(path: str) -> None:
    from pynenc_django.orchestrator.claim import ClaimMixin

    original = ClaimMixin.claim

    def claim(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = original(self, *args, **kwargs)
        tasks = ",".join(invocation.task.task_id.key for invocation in result.invocations)
        with open(path, "a") as log_file:
            log_file.write(f"{os.getpid()} {len(result.invocations)} {tasks or '-'}\n")
        return result

    ClaimMixin.claim = claim  # type: ignore[method-assign]


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
