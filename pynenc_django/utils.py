"""Small helpers shared by the backends (no Django imports at module level)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

# Bound ``IN (...)`` lists well below every vendor's parameter limit (SQLite: 32,766).
IN_CHUNK = 500


def now_utc() -> datetime:
    return datetime.now(UTC)


def sha256_hex(value: str) -> str:
    """Fixed-length, indexable key for values of unbounded length."""
    return hashlib.sha256(value.encode()).hexdigest()


def chunked[T](items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def to_db_time(value: datetime) -> datetime:
    """pynenc times are UTC, and naive ones mean UTC; hand Django what ``USE_TZ`` expects."""
    from django.conf import settings

    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware if settings.USE_TZ else aware.replace(tzinfo=None)


def from_db_time(value: datetime | None) -> datetime | None:
    """Back to a tz-aware UTC datetime, whatever ``USE_TZ`` and the vendor returned."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
