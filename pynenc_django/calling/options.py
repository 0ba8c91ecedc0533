"""Per-call options (Celery's ``apply_async`` arguments) on their way to the database.

``apply_async`` sets them for the one call it makes (:func:`call_options`); the
orchestrator reads them as it registers and queues the new invocation
(:func:`current_call_options`), and the state backend stores the ones that outlive the
submit (:meth:`CallOptions.stored`: queue, priority, expiry) in the invocation's row, so a
rerouted or retried invocation keeps its queue and priority and a worker that claims it
knows its expiry without another statement.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class CallOptions:
    """What one call asked for beyond its task's defaults; ``None``: the task's own."""

    #: Not run before this (aware) time: the invocation waits in the broker's delayed
    #: messages until then.
    due_at: datetime | None = None
    #: Not started by then: it ends FAILED with ``InvocationExpiredError`` instead.
    expires_at: datetime | None = None
    queue: str | None = None
    priority: float | None = None

    def stored(self) -> str | None:
        """The JSON kept in the invocation's row, or ``None`` when there is nothing to
        keep (the due time lives with the delayed message, not here)."""
        kept: dict[str, Any] = {}
        if self.expires_at is not None:
            kept["expires"] = self.expires_at.timestamp()
        if self.queue is not None:
            kept["queue"] = self.queue
        if self.priority is not None:
            kept["priority"] = self.priority
        return json.dumps(kept, sort_keys=True) if kept else None

    @classmethod
    def from_stored(cls, text: str | None) -> CallOptions | None:
        if not text:
            return None
        kept = json.loads(text)
        expires = kept.get("expires")
        return cls(
            expires_at=None if expires is None else datetime.fromtimestamp(expires, UTC),
            queue=kept.get("queue"),
            priority=kept.get("priority"),
        )

    def without_due(self) -> CallOptions:
        return replace(self, due_at=None)

    def is_due(self, now: datetime) -> bool:
        return self.due_at is None or self.due_at <= now

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


_current: ContextVar[CallOptions | None] = ContextVar("pynenc_django_call_options", default=None)


@contextmanager
def call_options(options: CallOptions) -> Iterator[None]:
    """Apply ``options`` to the calls made inside (one ``apply_async``)."""
    token = _current.set(options)
    try:
        yield
    finally:
        _current.reset(token)


def current_call_options() -> CallOptions | None:
    return _current.get()


def aware(when: datetime, name: str) -> datetime:
    """``when`` as an aware UTC time; a naive one is refused (it would be read in
    whatever zone each process runs in)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"{name}={when!r} is a naive datetime; pass an aware one "
            "(django.utils.timezone.now() + timedelta(...), or datetime.now(UTC))"
        )
    return when.astimezone(UTC)


def finite_seconds(value: float, name: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{name}={value!r} is not a finite number of seconds")
    return seconds
