"""pynenc-django: pynenc's backends on the Django ORM.

This module is imported by pynenc's plugin loader in every process that builds a
``Pynenc()``, Django-configured or not, so it must never touch settings or models.
"""

from typing import TYPE_CHECKING

from pynenc_django.transactions import enqueue_on_commit, enqueue_on_commit_using

if TYPE_CHECKING:
    from pynenc import Pynenc

    app: Pynenc  # see __getattr__

__version__ = "0.1.0"
__all__ = ["app", "enqueue_on_commit", "enqueue_on_commit_using"]


def __getattr__(name: str) -> object:
    """``from pynenc_django import app``: the project's pynenc app, built on first use."""
    if name == "app":
        from pynenc_django.project import get_app

        return get_app()
    raise AttributeError(f"module 'pynenc_django' has no attribute {name!r}")
