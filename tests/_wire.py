"""A loopback TCP proxy in front of Postgres that counts round trips on the wire.

Every connection a Flow opens through it is parsed on the way to the server (the
frontend half of the protocol: an untyped SSL/GSS request or startup packet first,
then messages of one type byte and an int32 length). A round trip is a message that
asks the server to answer: ``Sync`` (``S``) ends an extended-protocol exchange (Parse/
Bind/Execute... Sync, what asyncpg sends for every query), ``Query`` (``Q``) is a simple
query. ``round_trips`` sums both over every connection, so it counts what the client
really sent, whoever inside the library sent it.

Example::

    async with RoundTripCounter("127.0.0.1", 5432) as counter:
        url = f"postgresql://postgres@127.0.0.1:{counter.port}/db?sslmode=disable"
        ...
        await counter.quiet()
        before = counter.round_trips
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from types import TracebackType

_UNTYPED_REQUESTS = {80877103, 80877104}  # SSLRequest, GSSENCRequest: the startup follows
_ROUND_TRIP_TYPES = {ord("S"), ord("Q"), ord("H")}


class RoundTripCounter:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.round_trips = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RoundTripCounter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

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

    async def quiet(self, period: float = 0.6, timeout: float = 10.0) -> None:
        """Return once nothing was sent for ``period`` seconds (a worker's start-up
        traffic is over); raise TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                seen = self.round_trips
                await asyncio.sleep(period)
                if self.round_trips == seen:
                    return

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.upstream_host.startswith("/"):  # a unix socket's directory (embedded server)
            socket = f"{self.upstream_host}/.s.PGSQL.{self.upstream_port}"
            server_r, server_w = await asyncio.open_unix_connection(socket)
        else:
            server_r, server_w = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        self._writers += [client_w, server_w]
        for pump in (self._frontend(client_r, server_w), self._backend(server_r, client_w)):
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _frontend(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to server, message by message, counting the ones that ask for an answer."""
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
                writer.write(header + body)
                if kind in _ROUND_TRIP_TYPES:
                    self.round_trips += 1
                await writer.drain()
        writer.close()

    async def _backend(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(64 * 1024):
                writer.write(chunk)
                await writer.drain()
        writer.close()
