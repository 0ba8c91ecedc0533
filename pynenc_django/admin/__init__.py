"""The pynenc admin, registered on ``django.contrib.admin.site`` by admin autodiscovery.

One module per pynenc component; ``overview`` is the cluster dashboard linked from the
admin index. See :mod:`pynenc_django.admin.base` for what keeps it fast at scale.
"""

from django.contrib import admin

from pynenc_django.admin import broker, orchestrator, state_backend, trigger  # noqa: F401

# The index with the overview link, whatever the order of INSTALLED_APPS: an app's
# ``admin/index.html`` would only be found if it were listed before django.contrib.admin.
if admin.site.index_template is None:
    admin.site.index_template = "admin/pynenc_django/index.html"
