"""The project settings with a misspelled PYNENC key (``manage.py check`` must say so)."""

from tests.project.settings import *  # noqa: F403

PYNENC = {**PYNENC, "num_proceses": 2}  # noqa: F405  (sic: num_processes)
