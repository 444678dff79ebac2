"""What a worker asks of Python's cyclic garbage collector: to skip start-up objects.

The collector's full passes walk every object the process tracks, the event loop
stopped meanwhile. In a worker most of those are start-up objects that live as long
as the process (modules, the application, SQLAlchemy's and alembic's classes once
``migrate`` has loaded them): about 90,000 in the benchmark's process, which made
each full pass take 60-80 ms, several times a second under load. ``gc.freeze()``
moves the objects that exist now to a generation the collector never walks; the
runs' own objects are freed by reference counting (no execution leaves a cycle).

Done once per process, when its first worker has started (with ``gc_freeze``, the
default), whether the process is ``durableflow worker`` or an application running a
worker in-process: later workers and later objects are collected as usual. The
collection costs about 80 ms, once. A frozen object that later becomes part of an
unreachable cycle is never freed, which is why the garbage present at that moment
is collected first.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("durableflow.worker")

_frozen = False


def freeze_startup_objects() -> None:
    """Collect, then freeze what is left, the first time it is called in a process."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
    logger.debug(
        "froze %d start-up objects out of the collector's passes",
        gc.get_freeze_count(),
        extra={"event": "gc_frozen"},
    )
