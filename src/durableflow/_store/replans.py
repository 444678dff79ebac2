"""When a connection's cached query plans are made again.

A prepared statement keeps the plan Postgres made for it: a writer connection the
generic plan it made first (``force_generic_plan``), a pooled one the generic plan it
settled on after five executions. Nothing replans them while the table grows, unless
an ANALYZE invalidates them, and autovacuum may be slow to run one or switched off.
A plan made while ``runs`` held a few hundred rows may read the whole table: measured
with plans made on an empty table and run at 100,000 runs, a claim took 25 ms
(0.1 ms when planned at that size), a wake-up pass 78 ms and a deadline pass 56 ms.

So each connection drops its cached plans (``DISCARD PLANS``: the statements stay
prepared, the next execution plans them afresh) a second after it opened, then after
2, 4, 8 ... seconds, at most every ``MOST_SECONDS`` (the ``plan_refresh_interval``
setting; 0 turns this off): often while a young table grows,
rarely once it is large. The cost is one statement per connection per interval and
one planning of each statement it runs next.
"""

from __future__ import annotations

import time
from collections.abc import Callable

FIRST_SECONDS = 1.0
MOST_SECONDS = 60.0
DISCARD_PLANS = "DISCARD PLANS"
KEEP_AT_MOST = 1000  # connections remembered; past that, every clock starts again


class PlanRefresh:
    """Per connection (by server process id), whether its plans are due to be remade."""

    def __init__(
        self,
        first: float = FIRST_SECONDS,
        most: float = MOST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first = first
        self._most = most
        self._clock = clock
        self._due: dict[int, tuple[float, float]] = {}  # pid -> (due at, interval)

    def due(self, pid: int) -> bool:
        """True when the connection of backend ``pid`` should discard its plans now
        (and the next time is scheduled); a connection seen first starts its clock."""
        if self._most <= 0:  # turned off (plan_refresh_interval = 0)
            return False
        now = self._clock()
        entry = self._due.get(pid)
        if entry is None:
            if len(self._due) >= KEEP_AT_MOST:  # pids of connections long closed
                self._due.clear()
            first = min(self._first, self._most)
            self._due[pid] = (now + first, first)
            return False
        due_at, interval = entry
        if now < due_at:
            return False
        interval = min(interval * 2, self._most)
        self._due[pid] = (now + interval, interval)
        return True
