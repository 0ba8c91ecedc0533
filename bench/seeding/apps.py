from django.apps import AppConfig


class SeedingConfig(AppConfig):
    """``manage.py pynenc_seed``: realistic pynenc rows in bulk, for the benchmarks and the
    admin's tests. A development tool, so it is not part of the installed package."""

    name = "bench.seeding"
    label = "pynenc_seeding"
    default = True
