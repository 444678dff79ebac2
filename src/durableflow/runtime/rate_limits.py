"""Queue rate limits kept in Redis (``DURABLEFLOW_REDIS_URL``), with Postgres's semantics.

A rate limit ``(n, seconds)`` allows at most ``n`` starts of the queue's runs in any
window of ``seconds``, across all workers. In Postgres (the default) the claim
statement keeps that log itself (``queue_starts``). With Redis, each queue has a sorted
set of start reservations scored by Redis's own clock (microseconds):

1. before claiming, a worker reserves up to its free slots in one Lua script, which
   drops entries older than the window, counts the rest and adds as many members as
   the limit still allows (atomic: one script at a time per Redis);
2. it claims at most that many runs of the queue in Postgres;
3. it settles: the members it used get the time after the claim committed as their
   score (never earlier than the run's start, so a window is never under-counted), the
   unused ones are removed.

A reservation is counted from the moment it is made, so workers between steps 1 and 3
only ever make the limit stricter, never looser. Keys are
``<redis_key_prefix>:<schema>:rate:<queue>``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("durableflow.queues")

_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
local grant = math.min(wanted, limit - used)
if grant < 0 then grant = 0 end
for i = 1, grant do
    redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. i)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
return grant
"""

_SETTLE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local granted = tonumber(ARGV[2])
local used = tonumber(ARGV[3])
for i = 1, used do
    redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1] .. ':' .. i)
end
for i = used + 1, granted do
    redis.call('ZREM', KEYS[1], ARGV[1] .. ':' .. i)
end
return used
"""


@dataclass(frozen=True)
class Reservation:
    """Up to ``granted`` starts of ``queue`` reserved under ``member`` (settle it)."""

    queue: str
    member: str
    granted: int


class RedisRateLimiter:
    """Sliding-window start limits shared by every worker through one Redis."""

    def __init__(self, url: str, *, prefix: str, schema: str, timeout: float = 2.0) -> None:
        import redis.asyncio as redis_asyncio

        self._client: Any = redis_asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._errors: tuple[type[BaseException], ...] = (redis_asyncio.RedisError, OSError)
        self._prefix = f"{prefix}:{schema}:rate:"
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)

    def key(self, queue: str) -> str:
        return self._prefix + queue

    async def reserve(self, queue: str, limit: int, seconds: float, wanted: int) -> Reservation:
        """Reserve up to ``wanted`` starts; none (granted 0) when Redis does not answer."""
        member = uuid.uuid4().hex
        try:
            granted = await self._reserve(
                keys=[self.key(queue)], args=[limit, int(seconds * 1_000_000), wanted, member]
            )
        except self._errors as exc:
            logger.warning(
                "rate limit of queue %s: Redis did not answer (%s); not starting its runs now",
                queue,
                exc,
                extra={"event": "rate_limit_unavailable", "queue": queue},
            )
            return Reservation(queue, member, 0)
        return Reservation(queue, member, int(granted))

    async def settle(self, reservation: Reservation, used: int) -> None:
        """Keep the ``used`` reservations (scored now), give the rest back."""
        if reservation.granted == 0:
            return
        try:
            await self._settle(
                keys=[self.key(reservation.queue)],
                args=[reservation.member, reservation.granted, used],
            )
        except self._errors as exc:
            # The reservations stay, scored at reservation time (a few ms before the
            # starts): the window may be looser by that much, once; it expires by itself.
            logger.warning(
                "rate limit of queue %s: could not settle in Redis (%s)",
                reservation.queue,
                exc,
                extra={"event": "rate_limit_unavailable", "queue": reservation.queue},
            )

    async def close(self) -> None:
        await self._client.aclose()
