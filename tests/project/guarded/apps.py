from django.apps import AppConfig


class GuardedConfig(AppConfig):
    """Tasks under pynenc's concurrency control, for tests/runner/test_concurrency_control.py."""

    name = "tests.project.guarded"
    label = "guarded"
    default = True
