"""Reading invocations: status records (with final ones remembered), filters, pages and
counts, and a client's first wait for results.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import (
    InvocationStatus,
    InvocationStatusRecord,
)

from pynenc_django.db import in_event_loop, retry_transient
from pynenc_django.exceptions import InvocationNotStoredError
from pynenc_django.orchestrator.core import OrchestratorCore
from pynenc_django.orchestrator.rules import _FINAL
from pynenc_django.utils import (
    chunked,
    from_db_time,
    sha256_hex,
)
from pynenc_django.wakeup import current_result_waiter

if TYPE_CHECKING:
    from pynenc.identifiers.call_id import CallId
    from pynenc.task import Task, TaskId


class ClientResultsWaiter(ABC):
    """A runner that waits itself for the results a client awaits (a caller outside any
    invocation: a web request, a script), from the first wait on
    (:meth:`ReadsMixin.waiting_for_results`). Declared by the runner
    (:class:`~pynenc_django.runner.DjangoPersistentProcessRunner`), so that the
    orchestrator needs no import of it."""

    @abstractmethod
    def wait_for_client_results(self, result_invocation_ids: list[InvocationId]) -> None:
        """One wait for some of ``result_invocation_ids`` to become final."""


class ReadsMixin(OrchestratorCore):
    """Part of :class:`~pynenc_django.orchestrator.DjangoOrchestrator`; see the module docstring."""

    #: How long ``filter_final`` trusts the announcements alone (see there).
    FULL_LOOK_SEC = 1.0

    def waiting_for_results(
        self, caller_invocation_id: InvocationId | None, result_invocation_ids: list[InvocationId]
    ) -> None:
        """pynenc's; for a client (no caller invocation) under a runner that waits for
        clients itself (:class:`ClientResultsWaiter`), also its first wait. pynenc's
        result loop calls this after a status look found nothing final, then looks again
        before its own first wait: a look that could find nothing new. Not under a running
        event loop (``async_result``): a wait here would block it; the runner's async wait
        waits in a thread instead."""
        super().waiting_for_results(caller_invocation_id, result_invocation_ids)
        runner = self.app.runner
        if (
            caller_invocation_id is None
            and result_invocation_ids
            and isinstance(runner, ClientResultsWaiter)
            and not in_event_loop()
        ):
            runner.wait_for_client_results(result_invocation_ids)

    # ------------------------------------------------------------------ queries

    @retry_transient
    def get_existing_invocations(
        self,
        task: Task,
        key_serialized_arguments: dict[str, str] | None = None,
        statuses: list[InvocationStatus] | None = None,
    ) -> Iterator[InvocationId]:
        from django.db.models import Exists, OuterRef

        from pynenc_django.models import InvocationArgument

        qs = self._invocations().filter(task_id_key=task.task_id.key)
        if statuses:
            qs = qs.filter(status__in=[s.value for s in statuses])
        args = InvocationArgument.objects.using(self.db_alias).filter(
            app_id=self.app.app_id, invocation_id=OuterRef("invocation_id")
        )
        for key, value in (key_serialized_arguments or {}).items():
            qs = qs.filter(
                Exists(args.filter(arg_key=key, value_hash=sha256_hex(value), arg_value=value))
            )
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    @retry_transient
    def get_task_invocation_ids(self, task_id: TaskId) -> Iterator[InvocationId]:
        qs = self._invocations().filter(task_id_key=task_id.key)
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    def _filtered(self, task_id: TaskId | None, statuses: list[InvocationStatus] | None) -> Any:
        qs = self._invocations()
        if task_id:
            qs = qs.filter(task_id_key=task_id.key)
        if statuses:
            qs = qs.filter(status__in=[s.value for s in statuses])
        return qs

    @retry_transient
    def get_invocation_ids_paginated(
        self,
        task_id: TaskId | None = None,
        statuses: list[InvocationStatus] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[InvocationId]:
        """Newest registration first; ordered by an immutable column so pages never shift."""
        qs = self._filtered(task_id, statuses).order_by("-registered_at", "-id")
        return [
            InvocationId(i)
            for i in qs.values_list("invocation_id", flat=True)[offset : offset + limit]
        ]

    @retry_transient
    def count_invocations(
        self, task_id: TaskId | None = None, statuses: list[InvocationStatus] | None = None
    ) -> int:
        return self._filtered(task_id, statuses).count()

    @retry_transient
    def get_call_invocation_ids(self, call_id: CallId) -> Iterator[InvocationId]:
        qs = self._invocations().filter(call_id_key=call_id.key)
        return iter([InvocationId(i) for i in qs.values_list("invocation_id", flat=True)])

    @cached_property
    def _status_sql(self) -> str:
        from pynenc_django.models import Invocation

        return (
            f"SELECT i.status, i.status_runner_id, i.status_timestamp{self._result_column} "
            f"FROM {self._table(Invocation)} i{self._result_join} "
            "WHERE i.app_id = %s AND i.invocation_id = %s"
        )

    @cached_property
    def _fetches_results(self) -> bool:
        """Whether status reads also fetch a SUCCESS invocation's (small) result, for the
        ``get_result`` a waiting client makes next: our state backend, same database."""
        return self.shares_database(self.app.state_backend)

    @cached_property
    def _result_column(self) -> str:
        return ", r.result" if self._fetches_results else ""

    @cached_property
    def _result_join(self) -> str:
        """The LEFT JOIN of :attr:`_result_column`: results of at most
        ``PREFETCH_RESULT_BYTES``, so a status look never drags a large one along."""
        if not self._fetches_results:
            return ""
        from pynenc_django.models import InvocationResult
        from pynenc_django.store import PREFETCH_RESULT_BYTES

        size = self.dialect.result_length_sql("r.result")  # in bytes everywhere
        return (
            f" LEFT JOIN {self._table(InvocationResult)} r ON r.app_id = i.app_id "
            "AND r.invocation_id = i.invocation_id "
            f"AND i.status = '{InvocationStatus.SUCCESS.value}' AND {size} <= {PREFETCH_RESULT_BYTES}"
        )

    def _keep_result(self, invocation_id: str, row: Sequence[Any]) -> None:
        """Keep a result fetched by :attr:`_result_join` for the state backend's read."""
        if len(row) > 3 and row[3] is not None:
            self.store.remember_result(invocation_id, row[3])

    def get_invocation_status_record(self, invocation_id: str) -> InvocationStatusRecord:
        """Every status look of every waiting client: fixed SQL, and none for a status
        this process has seen final. :class:`InvocationNotStoredError` (a ``KeyError``)
        for an id not stored."""
        return (
            self.store.finals.get(invocation_id)
            or self._announced_final(invocation_id)
            or self._read_status_record(invocation_id)
        )

    def _announced_final(
        self, invocation_id: str, drain: bool = True
    ) -> InvocationStatusRecord | None:
        """A final status this thread's result waiter heard announced with all that a
        read would bring (PostgreSQL, migration 0011), remembered as that read would
        remember it: a woken client reads nothing more. ``None``: read it."""
        waiter = current_result_waiter(self.db_alias)
        if waiter is None:
            return None
        heard = waiter.announcement(invocation_id)
        if heard is None and drain and waiter.drain():  # arrived since this thread's wait
            heard = waiter.announcement(invocation_id)
        if heard is None or heard.app_id != self.app.app_id:
            return None
        success = heard.status == InvocationStatus.SUCCESS
        if success and heard.result is None and self._fetches_results:
            return None  # too large to announce: the read brings the status and the result
        record = InvocationStatusRecord(heard.status, heard.runner_id, heard.timestamp)
        self.store.finals.put(invocation_id, record)
        if success and heard.result is not None and self._fetches_results:
            self.store.remember_result(invocation_id, heard.result)
        return record

    @retry_transient
    def _read_status_record(self, invocation_id: str) -> InvocationStatusRecord:
        rows = self._fetch(self._status_sql, [self.app.app_id, invocation_id])
        if not rows:
            raise InvocationNotStoredError.for_app(invocation_id, self.app.app_id, self.db_alias)
        status, runner_id, timestamp = rows[0][:3]
        record = InvocationStatusRecord(
            InvocationStatus(status), runner_id, from_db_time(timestamp)
        )
        if record.status.is_final():
            self.store.finals.put(invocation_id, record)
            self._keep_result(invocation_id, rows[0])
        return record

    def filter_final(self, invocation_ids: list[InvocationId]) -> list[InvocationId]:
        """Which are final (a group's results loop asks this between waits): the ones this
        process has seen final, and one query per chunk for the rest, remembering them.

        On PostgreSQL, once a query has covered these ids while this process was
        subscribed to the final-status announcements, only announced ids can have become
        final since: the next looks query just those (a 2,000-invocation group is then not
        re-read every 20 ms), with a full look every ``FULL_LOOK_SEC`` all the same.
        """
        unknown = [i for i in dict.fromkeys(invocation_ids) if self.store.finals.get(i) is None]
        waiter = current_result_waiter(self.db_alias)
        if waiter is not None and unknown:
            waiter.drain()  # what arrived since the last wait, once for all of them
        if waiter is not None and waiter.listening and unknown:  # (still, after the drain)
            now, covered = time.monotonic(), getattr(self._local, "covered", None)
            if (
                covered is not None
                and covered[0] == waiter.epoch
                and now - covered[1] < self.FULL_LOOK_SEC
                and covered[2].issuperset(unknown)
            ):
                unknown = [i for i in unknown if waiter.announced(i)]
            else:
                self._local.covered = (waiter.epoch, now, frozenset(unknown))
            unknown = [i for i in unknown if self._announced_final(i, drain=False) is None]
        for chunk in chunked(unknown):
            self._remember_final(chunk)
        return [i for i in invocation_ids if self.store.finals.get(i) is not None]

    @retry_transient
    def _remember_final(self, invocation_ids: Sequence[str]) -> None:
        from pynenc_django.models import Invocation

        sql = (
            "SELECT i.status, i.status_runner_id, i.status_timestamp"
            f"{self._result_column}, i.invocation_id "
            f"FROM {self._table(Invocation)} i{self._result_join} WHERE i.app_id = %s "
            f"AND i.invocation_id IN ({', '.join(['%s'] * len(invocation_ids))}) "
            f"AND i.status IN ({', '.join(['%s'] * len(_FINAL))})"
        )
        for row in self._fetch(
            sql,
            [self.app.app_id, *invocation_ids, *_FINAL],
            prepare=False,  # shape varies
        ):
            invocation_id, (status, runner_id, timestamp) = row[-1], row[:3]
            record = InvocationStatusRecord(
                InvocationStatus(status), runner_id, from_db_time(timestamp)
            )
            self.store.finals.put(invocation_id, record)
            self._keep_result(invocation_id, row[:-1])

    @retry_transient
    def filter_by_status(
        self, invocation_ids: list[InvocationId], status_filter: frozenset[InvocationStatus]
    ) -> list[InvocationId]:
        if not invocation_ids or not status_filter:
            return []
        statuses = [s.value for s in status_filter]
        found: set[str] = set()
        for chunk in chunked(list(dict.fromkeys(invocation_ids))):
            found.update(
                self._invocations()
                .filter(invocation_id__in=chunk, status__in=statuses)
                .values_list("invocation_id", flat=True)
            )
        return [i for i in invocation_ids if i in found]
