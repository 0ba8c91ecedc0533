"""The pynenc admin, registered on ``django.contrib.admin.site`` by admin autodiscovery.

One module per pynenc component; ``overview`` is the cluster dashboard linked from the
admin index. See :mod:`pynenc_django.admin.base` for what keeps it fast at scale.
"""

from pynenc_django.admin import broker, orchestrator, state_backend, trigger  # noqa: F401
