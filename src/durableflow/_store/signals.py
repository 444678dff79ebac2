"""Group commit of plain signals: many callers' sends, one statement per flush.

A plain send (no hand-over to a wait blocked in this process) with an idempotency key
goes through here: ``flow.send_signal`` from a service's request handlers, a run's
``ctx.send_signal``. Idle, a send is flushed at once on a writer connection (the
single-row ``send_signal``, one round trip, no pool acquire); under load the sends
that arrive while a flush is in flight go together in the next (``send_signals``),
one commit for all of them, as starts and checkpoints do (``batching.py``).

Every send in a batch has its idempotency key, so a flush repeated after a lost reply
stores nothing twice: each send meets its key and reports as its first attempt would
have (``WaitStore.send_signal`` then sends the wake-up that attempt may never have
sent). A payload Postgres refuses fails only its own send (``write_isolating``).
Sends without a key are not retried, and sends in a caller's transaction or handed
over to a wait are not batched; ``WaitStore.send_signal`` makes those itself.

A batch takes only the run locks it can have at once (SKIP LOCKED): one that waited
while holding others could close a cycle with a checkpoint or outcome batch, which
lock their runs in their own order (under load it did: a deadlock, broken after a
second). A send whose run was locked is sent again on its own once its batch has
answered, waiting for the lock, holding no other; a run held by a long transaction (a
caller's ``send_signal(session=)`` not yet committed) holds up only the sends to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from durableflow._store.batching import GroupCommitter
from durableflow._store.errors import translate_errors
from durableflow._store.faults import refused_signal, write_isolating
from durableflow._store.records import PlainSend
from durableflow._store.retry import RetryBound

if TYPE_CHECKING:
    from durableflow._store.queries import Queries
    from durableflow._store.store import Store
    from durableflow._store.writers import WriterConnections


class SignalSends:
    """The group committer of a store's plain sends."""

    def __init__(self, store: Store, writers: WriterConnections) -> None:
        self._store = store
        self._writers = writers
        self._committer = GroupCommitter[PlainSend, asyncpg.Record](self._flush)

    async def send(self, send: PlainSend) -> asyncpg.Record:
        """Store ``send``; the row ``send_signal`` returns for it (its status, signal id,
        ``woken``, ``already_sent``)."""
        row = await self._committer.submit(send)
        if row.get("busy"):  # its run was locked: on its own now, waiting for the lock
            (row,) = await self._flush([send])
            if isinstance(row, BaseException):
                raise row
        return row

    async def close(self) -> None:
        await self._committer.close()

    async def _flush(self, sends: Sequence[PlainSend]) -> list[asyncpg.Record | BaseException]:
        clients = 0
        for send in sends:
            if send.client:
                clients += 1
        return await self._store.retrying(
            "sending signals",
            lambda: write_isolating(sends, self._write, refused_signal),
            lambda: [s.run_id for s in sends],
            RetryBound.of_batch(len(sends) - clients, len(sends)),
        )

    async def _write(self, sends: Sequence[PlainSend]) -> list[asyncpg.Record]:
        queries = self._store.queries
        with translate_errors(self._store.schema, "sending signals"):
            return await self._writers.run(
                lambda connection: send_plain_signals(connection, queries, sends)
            )


async def send_plain_signals(
    connection: asyncpg.Connection, queries: Queries, sends: Sequence[PlainSend]
) -> list[asyncpg.Record]:
    """``sends`` in one statement on ``connection``: one row per send, in order."""
    if len(sends) == 1:  # idle: the single-row statement, scalar parameters
        s = sends[0]
        row = await connection.fetchrow(
            queries.send_signal,
            s.run_id,
            s.name,
            s.payload,
            s.idempotency_key,
            None,
            None,
            None,
            None,
            None,
        )
        assert row is not None  # the statement always returns its one row
        return [row]
    rows: list[asyncpg.Record] = await connection.fetch(
        queries.send_signals,
        [s.run_id for s in sends],
        [s.name for s in sends],
        [s.payload for s in sends],
        [s.idempotency_key for s in sends],
    )
    return rows
