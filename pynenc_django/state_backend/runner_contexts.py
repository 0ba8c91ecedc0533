"""Runner contexts: each runner's identity and its parent chain, stored once per process
with all its ancestors, and rebuilt with their parents when read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pynenc.runner.runner_context import RunnerContext
from pynenc.types import Params, Result

from pynenc_django.db import retry_transient
from pynenc_django.state_backend.core import StateBackendCore
from pynenc_django.utils import chunked

logger = logging.getLogger("pynenc_django")

_RUNNER_CONTEXT_FIELDS = (
    "runner_id",
    "runner_cls",
    "parent_runner_id",
    "pid",
    "hostname",
    "thread_id",
)


def _context_chain(runner_context: RunnerContext) -> list[RunnerContext]:
    """The context followed by its ancestors, stopping at a repeated id."""
    chain: list[RunnerContext] = []
    seen: set[str] = set()
    ctx: RunnerContext | None = runner_context
    while ctx is not None and ctx.runner_id not in seen:
        seen.add(ctx.runner_id)
        chain.append(ctx)
        ctx = ctx.parent_ctx
    return chain


class RunnerContextsMixin(StateBackendCore[Params, Result]):
    """Part of :class:`~pynenc_django.state_backend.DjangoStateBackend`; see the module
    docstring."""

    def store_runner_context(self, runner_context: RunnerContext) -> None:
        """Store a context and its ancestors in one statement, once per process.

        The whole chain is written whenever the context is new, so a stored child
        always has its parents, even if another process purged them meanwhile.
        """
        chain = _context_chain(runner_context)
        if any(ctx.runner_id not in self._runner_context_cache for ctx in chain):
            self._store_runner_contexts(chain)
        for ctx in chain:
            self._runner_context_cache[ctx.runner_id] = ctx

    def _store_runner_context(self, runner_context: RunnerContext) -> None:
        self._store_runner_contexts(_context_chain(runner_context))

    @retry_transient
    def _store_runner_contexts(self, contexts: list[RunnerContext]) -> None:
        """Upsert the rows, each with this process's runner name: a chain never leaves
        one runner (its workers and threads), and the name outlives its heartbeats."""
        from pynenc_django.models import RunnerContextRecord
        from pynenc_django.models.base import RUNNER_NAME_LENGTH

        name = str(self.conf.django_runner_name or "")[:RUNNER_NAME_LENGTH]
        by_id = {
            ctx.runner_id: RunnerContextRecord(
                app_id=self.app.app_id,
                runner_id=ctx.runner_id,
                runner_cls=ctx.runner_cls,
                parent_runner_id=ctx.parent_ctx.runner_id if ctx.parent_ctx else None,
                pid=ctx.pid,
                hostname=ctx.hostname,
                thread_id=ctx.thread_id,
                name=name,
            )
            for ctx in contexts
        }
        self._upsert(
            RunnerContextRecord,
            [by_id[key] for key in sorted(by_id)],
            ["app_id", "runner_id"],
            ["runner_cls", "parent_runner_id", "pid", "hostname", "thread_id", "name"],
        )

    def _runner_contexts(self) -> Any:
        from pynenc_django.models import RunnerContextRecord

        return RunnerContextRecord.objects.using(self.db_alias).for_app(self.app.app_id)

    def _build_runner_contexts(self, rows: list[tuple[Any, ...]]) -> list[RunnerContext]:
        """Rebuild contexts with their parents, loading missing ancestors a level at a time."""
        rows_by_id: dict[str, tuple[Any, ...]] = {row[0]: row for row in rows}
        missing = {
            row[2] for row in rows if row[2] and row[2] not in rows_by_id
        } - self._runner_context_cache.keys()
        while missing:
            fetched: list[tuple[Any, ...]] = []
            for chunk in chunked(sorted(missing)):
                fetched.extend(
                    self._runner_contexts()
                    .filter(runner_id__in=chunk)
                    .values_list(*_RUNNER_CONTEXT_FIELDS)
                )
            rows_by_id.update((row[0], row) for row in fetched)
            missing = {
                row[2] for row in fetched if row[2] and row[2] not in rows_by_id
            } - self._runner_context_cache.keys()

        built: dict[str, RunnerContext] = {}

        def build(runner_id: str, visiting: frozenset[str]) -> RunnerContext | None:
            if runner_id in built:
                return built[runner_id]
            if runner_id in self._runner_context_cache and runner_id not in rows_by_id:
                return self._runner_context_cache[runner_id]
            row = rows_by_id.get(runner_id)
            if row is None or runner_id in visiting:
                return None
            _, runner_cls, parent_id, pid, hostname, thread_id = row
            parent = build(parent_id, visiting | {runner_id}) if parent_id else None
            if parent_id and parent is None:
                logger.warning(
                    "pynenc_django: runner context %s has no stored parent %s", runner_id, parent_id
                )
            ctx = RunnerContext(
                runner_cls=runner_cls,
                runner_id=runner_id,
                parent_ctx=parent,
                pid=pid,
                hostname=hostname,
                thread_id=thread_id,
            )
            built[runner_id] = ctx
            return ctx

        contexts = [ctx for row in rows if (ctx := build(row[0], frozenset())) is not None]
        for ctx in built.values():
            self._runner_context_cache.setdefault(ctx.runner_id, ctx)
        return contexts

    @retry_transient
    def _get_runner_contexts(self, runner_ids: list[str]) -> list[RunnerContext]:
        ids = list(dict.fromkeys(runner_ids))
        rows_by_id: dict[str, tuple[Any, ...]] = {}
        for chunk in chunked(ids):
            rows_by_id.update(
                (row[0], row)
                for row in self._runner_contexts()
                .filter(runner_id__in=chunk)
                .values_list(*_RUNNER_CONTEXT_FIELDS)
            )
        return self._build_runner_contexts([rows_by_id[i] for i in ids if i in rows_by_id])

    def _get_runner_context(self, runner_id: str) -> RunnerContext | None:
        contexts = self._get_runner_contexts([runner_id])
        return contexts[0] if contexts else None

    @retry_transient
    def _matching_runner_contexts(self, partial_id: str) -> list[RunnerContext]:
        rows = list(
            self._runner_contexts()
            .filter(runner_id__contains=partial_id)
            .order_by("runner_id")
            .values_list(*_RUNNER_CONTEXT_FIELDS)
        )
        return self._build_runner_contexts(rows)

    def get_matching_runner_contexts(self, partial_id: str) -> Iterator[RunnerContext]:
        return iter(self._matching_runner_contexts(partial_id))
