"""What this process knows of one app's invocations on one database alias.

The components read rows the others need next: the broker's pop brings the popped
invocation's state row (the claim reads it at once), a status look brings a small result
with its ``SUCCESS`` (the client's ``get_result`` follows), and a final status never
changes once seen. They hand these over through one :class:`InvocationStore` per app and
alias, the one object holding that shared state, instead of calling into each other.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pynenc_django.utils import BoundedCache

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.invocation.status import InvocationStatusRecord
    from pynenc.models.call_dto import CallDTO
    from pynenc.models.invocation_dto import InvocationDTO

    from pynenc_django.calling.options import CallOptions

# Invocations this process wrote or read. Their stored fields never change after
# registration, so the cache needs no invalidation beyond purge.
INVOCATION_CACHE_SIZE = 10_000
# Results fetched with their SUCCESS status, awaiting their read; only results up to
# PREFETCH_RESULT_BYTES are fetched that way, so this holds at most about 32 MB.
FETCHED_RESULTS_SIZE = 2_000
PREFETCH_RESULT_BYTES = 16_384
# Final statuses never change: once seen, a waiting client need not read them again.
FINAL_CACHE_SIZE = 50_000


class InvocationStore:
    """The per-process caches of one app on one alias (see the module's docstring).

    Each entry is immutable once cached, so a lost update between threads only costs a
    query; a purge of the app's tables clears what it invalidates."""

    def __init__(self) -> None:
        self.invocations: BoundedCache[str, tuple[InvocationDTO, CallDTO]] = BoundedCache(
            INVOCATION_CACHE_SIZE
        )
        #: Each kept until read once (:meth:`take_result`).
        self.results: BoundedCache[str, str] = BoundedCache(FETCHED_RESULTS_SIZE)
        self.finals: BoundedCache[str, InvocationStatusRecord] = BoundedCache(FINAL_CACHE_SIZE)
        #: What an invocation's call asked beyond its task's defaults (``apply_async``),
        #: read with its row; absent: nothing, or not read here.
        self.options: BoundedCache[str, CallOptions] = BoundedCache(INVOCATION_CACHE_SIZE)

    def remember_row(self, row: Sequence[Any]) -> None:
        """An invocation's state row (columns ``INVOCATION_FIELDS``) read by another
        component's statement: the broker's pop on PostgreSQL."""
        from pynenc_django.state_backend.invocations import dtos_from_row, options_from_row

        dtos = dtos_from_row(row)
        self.invocations.put(dtos[0].invocation_id, dtos)
        self.remember_options(dtos[0].invocation_id, options_from_row(row))

    def remember_options(self, invocation_id: str, options: CallOptions | None) -> None:
        if options is not None:
            self.options.put(invocation_id, options)

    def remember_result(self, invocation_id: str, serialized_result: str) -> None:
        """A result read with its SUCCESS status, for the ``get_result`` that follows."""
        self.results.put(invocation_id, serialized_result)

    def take_result(self, invocation_id: str) -> str | None:
        return self.results.pop(invocation_id)


_stores: weakref.WeakKeyDictionary[Pynenc, dict[str, InvocationStore]] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def store_of(app: Pynenc, alias: str) -> InvocationStore:
    """The :class:`InvocationStore` of ``app`` on ``alias``, made on first use."""
    with _stores_lock:
        by_alias = _stores.setdefault(app, {})
        if alias not in by_alias:
            by_alias[alias] = InvocationStore()
        return by_alias[alias]
