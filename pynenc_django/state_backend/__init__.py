"""State backend on the Django ORM: invocations, status history, results and workflow state.

pynenc imports this package in every process, Django or not (it is the plugin entry
point ``pynenc_django.state_backend``), so models are imported inside methods and Django
is only set up when the backend is built.

One module per concern, each a mixin of :class:`DjangoStateBackend`:

* :mod:`.invocations`: invocation rows, their bulk upsert and per-process cache;
* :mod:`.history`: status history, written in batches and read by keyset pages;
* :mod:`.results`: results and exceptions;
* :mod:`.workflows`: workflow runs, their data and sub-invocations;
* :mod:`.runner_contexts`: runner contexts and their parent chains;
* :mod:`.app_info`: each app's stored info, and discovery of every app's;
* :mod:`.lookups`: look-ups by id, an id not stored raising ``InvocationNotStoredError``;
* :mod:`.core`: what they all stand on (settings, paged reads, purge); the caches it
  shares with the broker and the orchestrator are :mod:`pynenc_django.store`'s.
"""

from __future__ import annotations

from pynenc.types import Params, Result

from pynenc_django.state_backend.app_info import AppInfoMixin
from pynenc_django.state_backend.core import PAGE_SIZE
from pynenc_django.state_backend.history import INSERT_BATCH_SIZE, HistoryMixin
from pynenc_django.state_backend.invocations import INVOCATION_FIELDS, InvocationsMixin
from pynenc_django.state_backend.lookups import LookupsMixin
from pynenc_django.state_backend.results import ResultsMixin
from pynenc_django.state_backend.runner_contexts import RunnerContextsMixin
from pynenc_django.state_backend.workflows import WorkflowsMixin


class DjangoStateBackend(
    LookupsMixin[Params, Result],
    InvocationsMixin[Params, Result],
    HistoryMixin[Params, Result],
    ResultsMixin[Params, Result],
    WorkflowsMixin[Params, Result],
    RunnerContextsMixin[Params, Result],
    AppInfoMixin[Params, Result],
):
    """Everything pynenc keeps about invocations after routing them, in Django models.

    Writes are idempotent upserts keyed by ``(app_id, <id>)``, so retrying a call after a
    transient error or a lost connection never duplicates or corrupts a record.

    Its settings, caches and database access are :class:`.core.StateBackendCore`'s, on
    which every mixin stands; the mixins come before pynenc's ``BaseStateBackend`` in the
    MRO, so their methods override pynenc's.
    """


__all__ = [
    "INSERT_BATCH_SIZE",
    "INVOCATION_FIELDS",
    "PAGE_SIZE",
    "DjangoStateBackend",
]
