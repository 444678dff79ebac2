"""The app of the leader, schedule and queue acceptance tests.

* ``every_second``: scheduled ``* * * * * *``; its runs are the record of which ticks
  fired (their idempotency keys ``schedule:every_second:<tick>``).
* ``limited``: sleeps ``LIMITED_SECONDS`` in a step; started on the queues whose limits
  the tests configure.

``install_leader_echo()`` prints ``EVENT <name> epoch=<n> t=<unix time>`` on stderr for
the leader's and the scheduler's events (``schedule_fired`` is a DEBUG event), so the
tests can replay each process's view of its terms in order.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from durableflow import Flow, FlowContext

LIMITED_SECONDS = 0.05


class _LeaderEcho(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event is None:
            return
        epoch = getattr(record, "epoch", "")
        sys.stderr.write(f"EVENT {event} epoch={epoch} t={time.time():.6f}\n")
        sys.stderr.flush()


def install_leader_echo() -> None:
    for name in ("durableflow.leader", "durableflow.schedules"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        if not any(isinstance(handler, _LeaderEcho) for handler in logger.handlers):
            logger.addHandler(_LeaderEcho(level=logging.DEBUG))


def build_flow(database_url: str | None = None) -> Flow:
    flow = Flow(database_url=database_url) if database_url else Flow()

    @flow.scheduled("* * * * * *")
    @flow.workflow(name="every_second", version=1)
    async def every_second(ctx: FlowContext, tick: dict[str, Any]) -> str:
        return str(tick["scheduled_at"])

    @flow.step()
    async def pause(ctx: FlowContext) -> None:
        await asyncio.sleep(LIMITED_SECONDS)

    @flow.workflow(name="limited", version=1)
    async def limited(ctx: FlowContext, index: int) -> int:
        await pause(ctx)
        return index

    return flow


install_leader_echo()
flow = build_flow()
