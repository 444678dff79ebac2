"""Samples queue depth for the ``durableflow.queue.*`` gauges while the app meters.

OpenTelemetry reads gauges through synchronous callbacks, which cannot query
Postgres; so each worker samples every queue (one grouped query on the claimable-runs
index) on its heartbeat interval and the gauges report the latest sample. Nothing is
queried while no meter provider is configured.
"""

from __future__ import annotations

import asyncio
import logging

from durableflow._store.admin import queue_stats
from durableflow._store.store import Store
from durableflow.errors import DurableFlowError
from durableflow.observability import metrics_enabled, record_queue_stats

logger = logging.getLogger("durableflow.worker")


async def sample_queues(store: Store, interval: float) -> None:
    """Forever: when metrics are on, sample queue depth and oldest age every ``interval``."""
    while True:
        if metrics_enabled():
            try:
                rows = await queue_stats(store)
            except DurableFlowError as exc:
                logger.debug("queue sample failed: %s", exc, extra={"event": "queue_sample_failed"})
            else:
                record_queue_stats((row["queue"], row["depth"], row["oldest_age"]) for row in rows)
        await asyncio.sleep(interval)
