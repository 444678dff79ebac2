"""Run ids: UUID version 7 (time-ordered, so new runs cluster at the end of the index)."""

from __future__ import annotations

import os
import time
from uuid import UUID

from durableflow.errors import RunNotFound


def uuid7() -> UUID:
    """A new RFC 9562 version-7 UUID: 48 bits of Unix milliseconds, then randomness."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b
    return UUID(int=value)


def as_run_id(run_id: UUID | str) -> UUID:
    """A run id given as a UUID or its text; ``RunNotFound`` for text that is not one."""
    if isinstance(run_id, UUID):
        return run_id
    try:
        return UUID(str(run_id))
    except ValueError:
        raise RunNotFound(run_id) from None
