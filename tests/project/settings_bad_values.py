"""The project settings with one bad value of each kind: ``manage.py check`` must name
every one, and no command may crash on them in ``AppConfig.ready()``."""

from tests.project.settings import *  # noqa: F403

PYNENC = {
    **PYNENC,  # noqa: F405
    "runner_considered_dead_after_minutes": "ten",  # wrong type (E007)
    "max_pending_seconds": "soon",  # wrong type, a second one (E007)
    "num_processes": 0,  # out of range (E008)
    "django_shutdown_grace_sec": -1,  # out of range (E008)
    "queues": "a,b",  # a string, not a list (E009)
}
