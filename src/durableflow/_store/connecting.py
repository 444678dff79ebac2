"""Every connection the store opens is opened here, out of reach of cancellation.

asyncpg's connect cannot be cancelled at every point without leaving something
behind. Cancelled just after the TCP handshake, before ``create_connection``
returns, the transport is closed under asyncpg's SSL-request protocol (the default
``sslmode=prefer`` sends that request first). The protocol then fails a future that
nothing awaits any more, and asyncio logs "Future exception was never retrieved ...
ConnectionError('unexpected connection_lost() call')" when it is collected, as an
ERROR in the service's log. A cancelled run whose execution was opening a pool
connection did exactly that (seen in ``bench/children_under_load.py --cancel 1.0``
and once in CI).

So the connect runs in a task of its own, which the caller's cancellation does not
reach: the caller is cancelled at once, as before, and a connection that opens
afterwards is terminated; a connect that fails afterwards has its error read, so it
is not logged either.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg


async def open_connection(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect(*args, **kwargs)``; cancelling the caller leaves nothing open."""
    attempt = asyncio.ensure_future(asyncpg.connect(*args, **kwargs))
    try:
        return await asyncio.shield(attempt)
    except asyncio.CancelledError:
        attempt.add_done_callback(_discard)
        raise


def _discard(attempt: asyncio.Future[asyncpg.Connection]) -> None:
    """Close the connection of an attempt nobody waits for any more, or read its error."""
    if attempt.cancelled():
        return
    if attempt.exception() is None:
        attempt.result().terminate()
