"""When a connection's cached plans are due to be remade (durableflow._store.replans)."""

from __future__ import annotations

from durableflow._store.replans import KEEP_AT_MOST, PlanRefresh


def schedule(
    refresh: PlanRefresh, now: list[float], until: float, step: float = 0.25
) -> list[float]:
    """The times, stepping the clock by ``step``, at which connection 1 was due."""
    due = []
    while now[0] <= until:
        if refresh.due(1):
            due.append(now[0])
        now[0] += step
    return due


def test_plans_are_remade_after_one_second_then_ever_less_often_up_to_the_cap() -> None:
    now = [0.0]
    refresh = PlanRefresh(first=1.0, most=8.0, clock=lambda: now[0])
    # first seen at 0: due at 1, then 2 s later (3), 4 s (7), 8 s (15), then every 8 s
    assert schedule(refresh, now, until=40.0) == [1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0]


def test_each_connection_keeps_its_own_clock() -> None:
    now = [0.0]
    refresh = PlanRefresh(first=1.0, most=60.0, clock=lambda: now[0])
    assert not refresh.due(1)
    now[0] = 0.5
    assert not refresh.due(2)  # seen first now: due at 1.5
    now[0] = 1.0
    assert refresh.due(1) and not refresh.due(2)
    now[0] = 1.5
    assert refresh.due(2) and not refresh.due(1)


def test_zero_turns_the_refresh_off() -> None:
    now = [0.0]
    refresh = PlanRefresh(most=0.0, clock=lambda: now[0])
    assert schedule(refresh, now, until=120.0, step=1.0) == []


def test_the_connections_remembered_are_bounded() -> None:
    now = [0.0]
    refresh = PlanRefresh(first=1.0, clock=lambda: now[0])
    for pid in range(KEEP_AT_MOST + 5):
        refresh.due(pid)
    assert len(refresh._due) <= KEEP_AT_MOST
