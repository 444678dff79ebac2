"""The battery's TCP proxy: forwards faithfully, late, in order; blackholes what it carries.

The battery's verdicts are only as good as its proxy: a proxy that lost a byte or
swallowed a close would wedge a healthy worker and blame durableflow for it. These
tests run against a small echo server, no Postgres needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from faults.proxy import BlackholeProxy

pytestmark = [pytest.mark.acceptance, pytest.mark.faults, pytest.mark.timeout(60)]


class EchoServer:
    """Echoes every line back; can drop every open connection (like a terminated backend)."""

    def __init__(self) -> None:
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    def drop_all(self) -> int:
        dropped = len(self.writers)
        for writer in list(self.writers):
            writer.close()
        return dropped

    async def close(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest_asyncio.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@contextlib.contextmanager
def running_proxy(port: int, latency: float = 0.0) -> Iterator[BlackholeProxy]:
    proxy = BlackholeProxy("127.0.0.1", port, name="test", latency=latency)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


async def test_forwards_in_order_with_latency(echo: EchoServer) -> None:
    with running_proxy(echo.port, latency=0.02) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        began = time.monotonic()
        lines = [f"line {index} {'x' * random.randint(0, 5000)}\n".encode() for index in range(200)]
        for line in lines:
            writer.write(line)
        await writer.drain()
        received = [await asyncio.wait_for(reader.readline(), 10) for _ in lines]
        assert received == lines
        assert time.monotonic() - began >= 0.04, "the reply comes back a round trip later"
        writer.close()


async def test_a_dropped_upstream_closes_the_client_and_loses_no_reply(echo: EchoServer) -> None:
    """Clients mid-conversation when the server drops them get every reply the server
    sent, then end-of-stream: nobody waits forever (what a terminated backend does)."""
    with running_proxy(echo.port, latency=0.02) as proxy:

        async def conversation(index: int) -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                for turn in range(1000):
                    writer.write(f"{index}:{turn}\n".encode())
                    line = await asyncio.wait_for(reader.readline(), 5)
                    if not line:
                        return "closed"
                    assert line == f"{index}:{turn}\n".encode()
                return "finished"
            except (ConnectionError, TimeoutError) as exc:
                return type(exc).__name__
            finally:
                writer.close()

        clients = [asyncio.create_task(conversation(index)) for index in range(20)]
        for _ in range(3):
            await asyncio.sleep(0.3)
            echo.drop_all()
        outcomes = await asyncio.gather(*clients)
    assert "TimeoutError" not in outcomes, outcomes
    assert set(outcomes) <= {"closed", "ConnectionResetError"}, outcomes


async def test_blackhole_silences_open_connections_and_lets_new_ones_pass(
    echo: EchoServer,
) -> None:
    with running_proxy(echo.port, latency=0.005) as proxy:
        old_reader, old_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        old_writer.write(b"before\n")
        assert await asyncio.wait_for(old_reader.readline(), 5) == b"before\n"

        assert proxy.blackhole_existing() == 1
        old_writer.write(b"after\n")
        await old_writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(old_reader.readline(), 1.0)  # no reply, no close, no RST

        new_reader, new_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        new_writer.write(b"fresh\n")
        assert await asyncio.wait_for(new_reader.readline(), 5) == b"fresh\n"

        # The server going away is hidden from the blackholed client too.
        echo.drop_all()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(old_reader.readline(), 0.5)
        assert not old_reader.at_eof()
        old_writer.close()
        new_writer.close()
