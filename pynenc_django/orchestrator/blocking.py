"""Blocking control: waiter -> waited edges, so runners run what others wait for first."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.orchestrator.base_orchestrator import BaseBlockingControl

from pynenc_django.db import DjangoBackendMixin, raw_delete, retry_transient
from pynenc_django.db.statements import Same, insert_columns
from pynenc_django.orchestrator.rules import _AVAILABLE, _FINAL
from pynenc_django.utils import chunked, now_utc

if TYPE_CHECKING:
    from pynenc_django.orchestrator.core import OrchestratorCore


class DjangoBlockingControl(DjangoBackendMixin, BaseBlockingControl):
    """Waiter → waited edges, so a runner can run what others are blocked on first.

    pynenc makes it an object of the orchestrator's; it shares the orchestrator's settings
    (so its alias) and database access."""

    def __init__(self, orchestrator: OrchestratorCore) -> None:
        self.orchestrator = orchestrator
        self.app = orchestrator.app

    @property
    def conf(self) -> Any:
        return self.orchestrator.conf

    @retry_transient
    def waiting_for_results(
        self, caller_invocation_id: InvocationId, result_invocation_ids: list[InvocationId]
    ) -> None:
        """Record the edges, then drop those of waited invocations already final.

        A final status releases its waiters (the status trigger of migration 0003 deletes
        its edges), but only edges that exist when it commits: one that became final
        between the waiter's look and this insert would keep its edge for good. Deleting
        those after the insert has committed, once a final status being written meanwhile
        has committed too (:meth:`~pynenc_django.vendors.base.Vendor.drop_final_edges`),
        leaves none behind: one that becomes final later finds its edge and releases it
        itself."""
        from pynenc_django.models import BlockingEdge, Invocation

        waited = list(dict.fromkeys(result_invocation_ids))
        insert_columns(
            self.db_alias,
            BlockingEdge,
            {
                "app_id": Same(self.app.app_id),
                "waiter_id": Same(caller_invocation_id),
                "waited_id": waited,
                "created_at": Same(now_utc()),
            },
            len(waited),
            unique_fields=("app_id", "waiter_id", "waited_id"),
            prepare=True,
        )
        tables = (self._table(BlockingEdge), self._table(Invocation))
        for chunk in chunked(waited):
            sql, params = self.dialect.drop_final_edges(
                tables, self.app.app_id, caller_invocation_id, chunk, _FINAL
            )
            # Prepared for one id (a single ``.result``, the common wait), not per group size.
            with self._cursor(prepare=len(chunk) == 1) as cursor:
                cursor.execute(sql, params)

    @retry_transient
    def release_waiters(self, waited_invocation_id: str) -> None:
        from pynenc_django.models import BlockingEdge

        raw_delete(
            BlockingEdge.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(waited_id=waited_invocation_id)
        )

    @cached_property
    def _blocking_sql(self) -> str:
        from pynenc_django.models import BlockingEdge, DelayedMessage, Invocation

        edges = self._table(BlockingEdge)
        invocations = self._table(Invocation)
        delayed = self._table(DelayedMessage)
        available = ", ".join(["%s"] * len(_AVAILABLE))
        # Not one waiting for its due time (a countdown, a retry's backoff): waited for
        # or not, it does not run before then.
        return (
            f"SELECT e.waited_id FROM {edges} e WHERE e.app_id = %s"
            f" AND EXISTS (SELECT 1 FROM {invocations} i WHERE i.app_id = %s"
            f" AND i.invocation_id = e.waited_id AND i.status IN ({available}))"
            f" AND NOT EXISTS (SELECT 1 FROM {edges} w WHERE w.app_id = %s"
            " AND w.waiter_id = e.waited_id)"
            f" AND NOT EXISTS (SELECT 1 FROM {delayed} d WHERE d.app_id = e.app_id"
            " AND d.invocation_id = e.waited_id)"
            " GROUP BY e.waited_id ORDER BY MIN(e.created_at), e.waited_id LIMIT %s"
        )

    @retry_transient
    def get_blocking_invocations(self, max_num_invocations: int) -> Iterator[InvocationId]:
        """Waited invocations that wait for nothing themselves and can run, oldest first.

        Runs before every claim, so it is fixed SQL (see ``DjangoBackendMixin._fetch``).
        """
        app_id = self.app.app_id
        rows = self._fetch(
            self._blocking_sql, [app_id, app_id, *_AVAILABLE, app_id, max_num_invocations]
        )
        return iter([InvocationId(row[0]) for row in rows])
