"""The trivial task every peer runs."""

from django.tasks import task


@task
def noop(i: int) -> int:
    return i
