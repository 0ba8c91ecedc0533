"""The project settings with a task on the ``emails`` queue, which ``PYNENC["queues"]``
does not declare: ``manage.py check`` warns (W002), ``pynenc_runner --queues emails`` runs it.

Only ``<app>.queues`` modules are autodiscovered (``tests/project/jobs/queues.py``).
"""

from tests.project.settings import *  # noqa: F403

PYNENC = {**PYNENC, "tasks_module": "queues"}  # noqa: F405
