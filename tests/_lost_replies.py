"""A loopback TCP proxy in front of Postgres that loses the reply to a committed statement.

``lose_reply_to(sql, meanwhile)`` arms the proxy for the next execution of exactly
``sql`` on any connection through it (asyncpg's Parse names the statement, its Bind
runs it; a simple Query carries the text itself). The server runs it and, the statement
being its own transaction, commits it; the proxy holds back the whole answer up to the
server's ReadyForQuery (sent only after the commit), awaits ``meanwhile()``, and then
closes the client's connection (and its server connection) without passing the answer
on. To the client this is a connection dropped after COMMIT, before the reply: what a
retry must cope with. Only that one exchange is touched; every other message is passed
through as it comes.

``drop_before(sql)`` is the other side of the same fault: the next execution of ``sql``
never reaches the server; the proxy closes both connections as the client sends it, so
the statement does not run at all. ``break_next(sql, fault)`` arms either, by the names
in ``FAULTS`` (handy as test parameters). ``drop_every(sql)`` drops every execution of
``sql`` the same way until ``stop_dropping()``: a write that keeps failing while every
other statement goes through.

``sever_during(sql)`` is the fault in between: the next execution of ``sql`` reaches the
server whole, and the client's connection is dropped as soon as it is sent, while the
proxy keeps the server's end open, so the server runs the statement to its end (and
commits it) whenever it can, answering no one. To the client this is a connection lost
during the statement; a retry may then run while that first attempt still does (held
up on a lock, say).

Example::

    async with LostReplyProxy(database_url) as proxy:
        client = Flow(database_url=proxy.url)
        proxy.lose_reply_to(queries.send_signal, meanwhile=run_finished)
        ...
        assert proxy.lost == 1
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

_UNTYPED_REQUESTS = {80877103, 80877104}  # SSLRequest, GSSENCRequest: the startup follows

FAULTS = ("dropped_before_it_ran", "reply_lost_after_commit")


class _Link:
    """One client connection: its prepared statements, and whether its reply is to go."""

    def __init__(self) -> None:
        self.statements: dict[bytes, bytes] = {}  # statement name -> query text
        self.victim = False
        self.doomed = False  # the client just sent the statement to drop before it runs
        self.severing = False  # the client is sending the statement to run without it
        self.severed = False  # the client is gone; the server runs on, answering no one


class LostReplyProxy:
    """The proxy, in front of the server of ``database_url``; ``url`` reaches the same
    database through it (once entered)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        parts = urlsplit(database_url)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 5432
        self.port = 0
        self.lost = 0  # replies lost so far
        self.dropped = 0  # statements dropped before they ran, so far
        self.severed = 0  # statements left running on the server without their client
        self._sql: bytes | None = None
        self._drop_sql: bytes | None = None
        self._drop_every_sql: bytes | None = None
        self._sever_sql: bytes | None = None
        self._meanwhile: Callable[[], Awaitable[object]] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    def lose_reply_to(self, sql: str, meanwhile: Callable[[], Awaitable[object]]) -> None:
        """Lose the answer to the next execution of ``sql``, after ``meanwhile()``."""
        self._sql = sql.encode()
        self._meanwhile = meanwhile

    def drop_before(self, sql: str) -> None:
        """Drop the connection that sends the next execution of ``sql``, before it runs."""
        self._drop_sql = sql.encode()

    def drop_every(self, sql: str) -> None:
        """Drop every connection that sends ``sql``, before it runs, until ``stop_dropping``."""
        self._drop_every_sql = sql.encode()

    def stop_dropping(self) -> None:
        """Let ``sql`` of ``drop_every`` through again."""
        self._drop_every_sql = None

    def sever_during(self, sql: str) -> None:
        """Drop the client's connection once it has sent the next execution of ``sql``,
        and let the server run that statement to its end on its own."""
        self._sever_sql = sql.encode()

    def break_next(self, sql: str, fault: str) -> None:
        """Arm the fault named ``fault`` (one of ``FAULTS``) for the next ``sql``."""
        if fault == "dropped_before_it_ran":
            self.drop_before(sql)
        elif fault == "reply_lost_after_commit":
            self.lose_reply_to(sql, meanwhile=lambda: asyncio.sleep(0))
        else:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")

    @property
    def faults(self) -> int:
        """Faults made so far, of any kind."""
        return self.lost + self.dropped + self.severed

    async def __aenter__(self) -> LostReplyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        parts = urlsplit(self.database_url)
        userinfo, at, _ = parts.netloc.rpartition("@")  # user and password, if any
        netloc = f"{userinfo}{at}127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "sslmode=disable", ""))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        self._writers += [client_w, server_w]
        link = _Link()
        pumps = (
            self._frontend(link, client_r, server_w, client_w),
            self._backend(link, server_r, client_w, server_w),
        )
        for pump in pumps:
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _note(self, link: _Link, kind: int, body: bytes) -> None:
        """Mark the link when this client message executes an armed statement."""
        if kind == ord("P"):  # Parse: statement name, query text, ...
            name, query, _ = body.split(b"\0", 2)
            link.statements[name] = query
            return
        if kind == ord("B"):  # Bind: portal name, statement name, ...
            query = link.statements.get(body.split(b"\0", 2)[1])
        elif kind == ord("Q"):  # a simple query: its text
            query = body.rstrip(b"\0")
        else:
            return
        if self._sql is not None and query == self._sql:
            self._sql = None  # once
            link.victim = True
        if self._drop_sql is not None and query == self._drop_sql:
            self._drop_sql = None  # once
            link.doomed = True
        if self._drop_every_sql is not None and query == self._drop_every_sql:
            link.doomed = True
        if self._sever_sql is not None and query == self._sever_sql:
            self._sever_sql = None  # once
            link.severing = True

    async def _frontend(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_w: asyncio.StreamWriter,
    ) -> None:
        """Client to server, message by message, noting which statement each one runs."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:  # the untyped packets: SSL/GSS requests, then the startup message
                header = await reader.readexactly(8)
                length, code = struct.unpack("!ii", header)
                writer.write(header + await reader.readexactly(length - 8))
                await writer.drain()
                if code not in _UNTYPED_REQUESTS:
                    break
            while True:
                header = await reader.readexactly(5)
                kind, length = header[0], struct.unpack("!i", header[1:])[0]
                body = await reader.readexactly(length - 4)
                # Marked before the server has the message, so before any answer to it.
                self._note(link, kind, body)
                if link.doomed:  # the Bind that would run it: neither side gets further
                    self.dropped += 1
                    client_w.transport.abort()
                    writer.transport.abort()
                    return
                writer.write(header + body)
                await writer.drain()
                if link.severing and kind == ord("S"):  # Sync: the server has it all
                    self.severed += 1
                    link.severed = True
                    client_w.transport.abort()
                    return  # the server's end stays open until the proxy closes
        writer.close()

    async def _backend(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        server_w: asyncio.StreamWriter,
    ) -> None:
        """Server to client; on a marked link, the answer is read message by message
        (asyncpg sends a statement only once the previous answer is in, so it starts
        at a message boundary) and held back up to its ReadyForQuery."""
        held = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(64 * 1024):
                if link.severed:
                    continue  # the answer of a statement whose client is gone
                if not link.victim:
                    writer.write(chunk)
                    await writer.drain()
                    continue
                held += chunk
                while len(held) >= 5:
                    kind, length = held[0], struct.unpack("!i", held[1:5])[0]
                    if len(held) < 1 + length:
                        break
                    held = held[1 + length :]
                    if kind == ord("Z"):  # ReadyForQuery: the statement has committed
                        assert self._meanwhile is not None
                        await self._meanwhile()
                        self.lost += 1
                        writer.transport.abort()
                        server_w.transport.abort()
                        return
        writer.close()
