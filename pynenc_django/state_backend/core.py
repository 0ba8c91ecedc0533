"""What every part of :class:`~pynenc_django.state_backend.DjangoStateBackend` stands on:
its settings, its per-process caches, paged reads and the purge of all its tables, with
the database access of :class:`~pynenc_django.db.DjangoBackendMixin`, on pynenc's
``BaseStateBackend``.

Each of the state backend's modules is a mixin deriving from :class:`StateBackendCore`,
so that each is type-checked against what it uses; :class:`DjangoStateBackend` composes
them, all before this class in its MRO (their overrides of pynenc's methods win).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.state_backend.base_state_backend import BaseStateBackend
from pynenc.types import Params, Result

from pynenc_django.conf import ConfigStateBackendDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django, retry_transient

if TYPE_CHECKING:
    from pynenc.app import Pynenc

# Rows per query when streaming unbounded listings: bounded memory, no cursor held open
# while the caller works, and each page is retried on its own.
PAGE_SIZE = 1000


class StateBackendCore(DjangoBackendMixin, BaseStateBackend[Params, Result]):
    """The settings, caches and database access shared by the state backend's mixins."""

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)
        ensure_django()
        # pynenc stores each new invocation twice (on creation and on registration) and
        # reads it back on every status change (trigger reports, claims): one query each,
        # saved by ``self.store.invocations``.
        self._local = threading.local()

    @cached_property
    def conf(self) -> ConfigStateBackendDjango:
        return ConfigStateBackendDjango(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )

    # ------------------------------------------------------------------ helpers

    def _iter_pages(self, queryset: Any, fields: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        """Stream ``fields`` of ``queryset`` in primary-key order, one short query per page."""
        last_pk: int | None = None
        while True:
            rows = self._fetch_page(queryset, fields, last_pk)
            for row in rows:
                yield row[1:]
            if len(rows) < PAGE_SIZE:
                return
            last_pk = rows[-1][0]

    @retry_transient
    def _fetch_page(
        self, queryset: Any, fields: tuple[str, ...], last_pk: int | None
    ) -> list[tuple[Any, ...]]:
        if last_pk is not None:
            queryset = queryset.filter(pk__gt=last_pk)
        return list(queryset.order_by("pk").values_list("pk", *fields)[:PAGE_SIZE])

    def _iter_ids(self, queryset: Any, field: str) -> Iterator[InvocationId]:
        for (value,) in self._iter_pages(queryset, (field,)):
            yield InvocationId(value)

    # ------------------------------------------------------------------ purge

    @retry_transient
    def purge(self) -> None:
        """Delete every row of this app, and forget which runner contexts were stored."""
        from pynenc_django import models as m

        with self.write_transaction():
            for model in (
                m.StateInvocation,
                m.InvocationHistory,
                m.InvocationResult,
                m.InvocationException,
                m.RunnerContextRecord,
                m.WorkflowRun,
                m.WorkflowData,
                m.WorkflowSubInvocation,
                m.AppInfoRecord,
            ):
                model.objects.using(self.db_alias).for_app(self.app.app_id).delete()
        # Otherwise this process would never re-store contexts it cached before the purge.
        self._runner_context_cache.clear()
        self.store.invocations.clear()
        self.store.results.clear()
