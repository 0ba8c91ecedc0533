"""New invocations get UUIDv7 ids (:mod:`pynenc_django.calling.ids`): time first, so the
indexes keyed by invocation id grow at one end instead of at random pages."""

from __future__ import annotations

import time
import uuid

from pynenc import Pynenc

from pynenc_django.calling.ids import uuid7


def double(x: int) -> int:
    return 2 * x


def test_an_id_is_a_version_7_uuid_of_now() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(value)
    assert str(parsed) == value and len(value) == 36
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert before <= parsed.int >> 80 <= after


def test_ids_are_unique_and_sort_by_the_millisecond_they_were_made() -> None:
    made = [uuid7() for _ in range(100_000)]
    assert len(set(made)) == len(made)
    millis = [uuid.UUID(v).int >> 80 for v in made]
    assert millis == sorted(millis)
    # Within a millisecond the rest is random: ids of later milliseconds sort after.
    firsts = {}
    for value, ms in zip(made, millis, strict=True):
        firsts.setdefault(ms, value)
    assert list(firsts.values()) == sorted(firsts.values())


def test_calls_and_batches_get_them(app_instance: Pynenc) -> None:
    task = app_instance.task(double)
    single = task(1)
    batch = task.parallelize([(i,) for i in range(3)])
    for invocation in [single, *batch.invocations]:
        assert uuid.UUID(invocation.invocation_id).version == 7
    stored = app_instance.state_backend.get_invocation(single.invocation_id)
    assert stored.invocation_id == single.invocation_id
