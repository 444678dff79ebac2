"""How operators' tools write times and durations (the CLI and the web UI alike)."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def format_time(value: datetime | None) -> str:
    """A timestamp as operators read it: UTC, to the second."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_seconds(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h13m``, ``1e+300s``; ``inf`` and ``nan`` as such.

    Never raises: a stored value can be anything a float holds (a queue limit saved
    before they were bounded), and one odd value must not fail a whole listing.
    """
    if seconds is None:
        return "-"
    if math.isnan(seconds):
        return "nan"
    if math.isinf(seconds):
        return "inf" if seconds > 0 else "0ms"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds >= 1e8:  # over three years: hours would be a wall of digits
        return f"{seconds:.3g}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
