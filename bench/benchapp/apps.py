from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = "bench.benchapp"
    label = "benchapp"

    def ready(self) -> None:
        from bench import ready, wirecount
        from bench.benchapp.counting import install_django_counting

        # Each a no-op unless its variable is set (only in the runner under test):
        # PYNENC_BENCH_COUNT_DIR, the statement log of runner_idle_wake.py/delayed.py;
        # BENCH_WIRE_COUNT_DIR, make bench's counting phase; BENCH_READY_DIR, its readiness.
        install_django_counting()
        wirecount.install_from_env()
        ready.install_django()
