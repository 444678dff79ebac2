"""The leader's duties, assembled for one worker: the one place to add a duty.

Every duty runs only on the leader, under its epoch, and must fence its writes on that
epoch (see ``LeaderDuty``). Built in here:

* ``forget_dead_workers`` (added by ``Leadership`` itself);
* ``schedules``: fire due cron ticks, save this code's ``@flow.scheduled`` declarations;
* ``retention``: prune the finished runs that ``flow.configure_retention`` policies
  expire, every ``RETENTION_INTERVAL`` seconds.

Other duties are added here the same way, ``leadership.add_duty(LeaderDuty(name, run,
interval=...))``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from durableflow._store.leader import LeaderStore
from durableflow._store.schedules import ScheduleDefinition, ScheduleStore
from durableflow._store.store import Store
from durableflow.config import FlowSettings
from durableflow.engine.registry import Registry, WorkflowDefinition
from durableflow.runtime.leader import LeaderDuty, Leadership, NotLeader
from durableflow.runtime.schedules import MAX_PASS_INTERVAL, ScheduleDuty

logger = logging.getLogger("durableflow.leader")

# Retention is coarse by nature (policies keep days, not seconds): once a minute is ample.
RETENTION_INTERVAL = 60.0

RetentionPass = Callable[[], Awaitable[object]]


class RetentionDuty:
    """Applies the retention policies while this worker leads.

    Pruning is idempotent and resumable (storage prefix, then rows, per run), so two
    leaders overlapping for a moment prune the same runs at worst. The duty still
    checks the epoch before each pass, so a deposed leader stops at once.
    """

    name = "retention"

    def __init__(self, leader_store: LeaderStore, apply: RetentionPass) -> None:
        self._leader_store = leader_store
        self._apply = apply

    async def __call__(self, epoch: int) -> float | None:
        record = await self._leader_store.status()
        if record.epoch != epoch:
            raise NotLeader(epoch)
        result = await self._apply()
        logger.debug("retention pass: %s", result, extra={"event": "retention_applied"})
        return None


def build_leadership(
    store: Store,
    settings: FlowSettings,
    registry: Registry,
    code_hash_of: Callable[[WorkflowDefinition], str],
    declared: Sequence[ScheduleDefinition],
    retention: RetentionPass | None = None,
) -> Leadership:
    """A worker's part in the election, with every leader duty of this code."""
    leadership = Leadership(store, settings)
    schedules = ScheduleDuty(
        ScheduleStore(store),
        registry,
        code_hash_of,
        declared,
        misfire_grace=settings.schedule_misfire_grace,
    )
    leadership.add_duty(LeaderDuty(schedules.name, schedules, interval=MAX_PASS_INTERVAL))
    if retention is not None:
        duty = RetentionDuty(LeaderStore(store), retention)
        leadership.add_duty(LeaderDuty(duty.name, duty, interval=RETENTION_INTERVAL))
    return leadership
