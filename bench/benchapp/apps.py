from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = "bench.benchapp"
    label = "benchapp"

    def ready(self) -> None:
        from bench.benchapp.counting import install_django_counting

        # A no-op unless PYNENC_BENCH_COUNT_DIR is set (only the runner under test gets it).
        install_django_counting()
