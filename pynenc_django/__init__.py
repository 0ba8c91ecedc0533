"""pynenc-django: pynenc's backends on the Django ORM.

This module is imported by pynenc's plugin loader in every process that builds a
``Pynenc()``, Django-configured or not, so it must never touch settings or models.
"""

__version__ = "0.1.0"
