"""Small helpers shared by the backends (no Django imports at module level)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import overload

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


@overload
def from_db_time(value: datetime) -> datetime: ...
@overload
def from_db_time(value: None) -> None: ...
@overload
def from_db_time(value: datetime | None) -> datetime | None: ...
def from_db_time(value: datetime | None) -> datetime | None:
    """Back to a tz-aware UTC datetime, whatever ``USE_TZ`` and the vendor returned."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class BoundedCache[K, V]:
    """A least-recently-used map of at most ``size`` entries, for immutable rows.

    Not thread-safe beyond what ``OrderedDict`` gives; a lost update only costs a query.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
