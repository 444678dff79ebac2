"""The leader's duties, assembled for one worker: the one place to add a duty.

Every duty runs only on the leader, under its epoch, and must fence its writes on that
epoch (see ``LeaderDuty``). Built in here:

* ``forget_dead_workers`` (added by ``Leadership`` itself);
* ``schedules``: fire due cron ticks, save this code's ``@flow.scheduled`` declarations.

Slots for duties of other families: expired deadlines of runs nobody executes, and
retention (pruning), are added here the same way, ``leadership.add_duty(LeaderDuty(
name, run, interval=...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from durableflow._store.schedules import ScheduleDefinition, ScheduleStore
from durableflow._store.store import Store
from durableflow.config import FlowSettings
from durableflow.engine.registry import Registry, WorkflowDefinition
from durableflow.runtime.leader import LeaderDuty, Leadership
from durableflow.runtime.schedules import MAX_PASS_INTERVAL, ScheduleDuty


def build_leadership(
    store: Store,
    settings: FlowSettings,
    registry: Registry,
    code_hash_of: Callable[[WorkflowDefinition], str],
    declared: Sequence[ScheduleDefinition],
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
    return leadership
