"""Operations around the backends: what keeps a deployment healthy rather than what runs
an invocation.

- :mod:`~pynenc_django.ops.status`: the cluster's health (``manage.py pynenc_status``).
- :mod:`~pynenc_django.ops.retention`: purging final invocations (``manage.py pynenc_purge``).
- :mod:`~pynenc_django.ops.recovery`: the work of lost runner hosts and lost claims.
- :mod:`~pynenc_django.ops.planner`: first statistics for young hot tables.
"""
