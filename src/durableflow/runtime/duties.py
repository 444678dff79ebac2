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

from durableflow._store.schedules import ScheduleDefinition, ScheduleStore
from durableflow._store.store import Store
from durableflow.artefacts.prune import StaleEpoch
from durableflow.config import FlowSettings
from durableflow.engine.registry import Registry, WorkflowDefinition
from durableflow.runtime.leader import LeaderDuty, Leadership, NotLeader
from durableflow.runtime.schedules import MAX_PASS_INTERVAL, ScheduleDuty

logger = logging.getLogger("durableflow.leader")

# Retention is coarse by nature (policies keep days, not seconds): once a minute is ample.
RETENTION_INTERVAL = 60.0

# One retention pass fenced on the given leader epoch; raises StaleEpoch when refused.
RetentionPass = Callable[[int], Awaitable[object]]


class RetentionDuty:
    """Applies the retention policies while this worker leads.

    Every run's deletion is fenced on the epoch (see ``artefacts.prune``): the epoch is
    checked before the run's storage prefix goes, and the transaction deleting its rows
    locks the leader row at that epoch. A refusal stops the pass at once and steps this
    worker down. Pruning is idempotent and resumable (storage prefix, then rows, per
    run), so a run a deposed leader left half-pruned is finished by the next pass.
    """

    name = "retention"

    def __init__(self, apply: RetentionPass) -> None:
        self._apply = apply

    async def __call__(self, epoch: int) -> float | None:
        try:
            result = await self._apply(epoch)
        except StaleEpoch as exc:
            raise NotLeader(epoch) from exc
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
        duty = RetentionDuty(retention)
        leadership.add_duty(LeaderDuty(duty.name, duty, interval=RETENTION_INTERVAL))
    return leadership
