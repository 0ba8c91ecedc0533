"""Invocation ids that grow with time (UUIDv7, RFC 9562) instead of pynenc's random uuid4.

Every table keys an invocation's rows by its id, and several indexes lead with it. With
random ids each new invocation lands on a random leaf page of each of those indexes: once
the indexes outgrow the database's buffer cache (a few million invocations on a default
PostgreSQL), every insert reads and dirties a page of its own, and the first touch of a
page after a checkpoint writes the whole page to the WAL. Ids that start with the
time append next to each other instead, so the cost of an insert stays that of an empty
table however many finished invocations are kept.

An id is still a UUID string of 36 characters with 74 random bits per millisecond, so
uniqueness is that of uuid4 for any realistic rate; what an id reveals is when it was
made, which the invocation's history shows anyway.
"""

from __future__ import annotations

import os
import time

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RAND_A = 0xFFF << 64  # 12 random bits after the version
_RAND_B = (1 << 62) - 1  # 62 random bits after the variant


def uuid7() -> str:
    """A new UUIDv7 string: 48 bits of Unix milliseconds, then 74 random bits."""
    random_bits = int.from_bytes(os.urandom(10))
    value = (
        (time.time_ns() // 1_000_000) << 80
        | _VERSION_7
        | (random_bits << 64 & _RAND_A)
        | _VARIANT_RFC
        | random_bits & _RAND_B
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def install() -> None:
    """Make pynenc's invocations take their ids from :func:`uuid7` (once).

    pynenc generates them in ``pynenc.identifiers.invocation_id.generate_invocation_id``,
    which its invocation modules import by name: each module's name is replaced.
    """
    from pynenc.identifiers import invocation_id
    from pynenc.invocation import base_invocation, dist_invocation

    for module in (invocation_id, base_invocation, dist_invocation):
        if not hasattr(module, "generate_invocation_id"):
            raise RuntimeError(
                f"{module.__name__} has no generate_invocation_id: this pynenc generates "
                "invocation ids elsewhere, and pynenc-django does not know where"
            )
        module.generate_invocation_id = uuid7  # type: ignore[attr-defined]
