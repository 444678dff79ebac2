"""A TCP proxy that can blackhole the connections it already carries.

Each worker process of the battery reaches the private cluster through a proxy of its
own, so a fault can be aimed at one worker. ``blackhole_existing()`` models what a
half-dead network does to long-lived connections (a NAT or firewall that forgot them,
a peer behind a broken link): from then on nothing sent on those connections arrives,
in either direction, and nobody is told. The sockets stay open, no RST, no FIN; the
worker's reads simply never complete. New connections made afterwards pass normally,
so a worker that gives up on a dead socket and reconnects recovers.

The proxy runs in a thread with its own event loop, so it keeps forwarding whatever the
test's own loop is busy with (waiting for ``pg_ctl``, polling, checking the ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

BUFFER = 64 * 1024


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    blackholed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.close()


class BlackholeProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_host``:``upstream_port``, each chunk
    ``latency`` seconds late (a database a few milliseconds away, as in production).

    Example::

        proxy = BlackholeProxy("127.0.0.1", cluster.port, name="worker-a")
        proxy.start()
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/app"
        ...
        proxy.blackhole_existing()   # the worker's open connections go silent
        proxy.close()
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, name: str, latency: float = 0.0
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.name = name
        self.latency = latency
        self.port = 0
        self.accepted = 0
        self.blackholed = 0
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._failure: BaseException | None = None

    # -- control, from the test's thread -------------------------------------------

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 (``self.port``) and start forwarding."""
        self._thread = threading.Thread(target=self._main, name=f"proxy-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError(f"proxy {self.name} did not start listening within 30s")
        if self._failure is not None:
            raise RuntimeError(f"proxy {self.name} failed to start") from self._failure

    def blackhole_existing(self) -> int:
        """Silence every connection open now (new ones still pass); returns how many."""
        return self._call(self._blackhole)

    def open_connections(self) -> int:
        """Connections currently carried (blackholed ones included)."""
        return self._call(self._count)

    def close(self) -> None:
        """Stop listening, close every connection, end the thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        stopped = self._stopped
        assert stopped is not None
        loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout=30)

    def _call(self, function: Callable[[], int]) -> int:
        loop = self._loop
        assert loop is not None, "start() the proxy first"

        async def run() -> int:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    # -- the proxy's own thread and loop ---------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() if it happens before "ready"
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            for link in list(self._links):
                for task in link.tasks:
                    task.cancel()
                link.close()
            tasks = [task for link in self._links for task in link.tasks]
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

    def _blackhole(self) -> int:
        silenced = 0
        for link in self._links:
            if not link.blackholed:
                link.blackholed = True
                silenced += 1
        self.blackholed += silenced
        return silenced

    def _count(self) -> int:
        return len(self._links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            # The server is down (a restart scenario): the client sees its connection
            # close during start-up, as behind any TCP load balancer.
            writer.close()
            return
        link = _Link(writer, upstream_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, upstream_writer, link, from_client=True)),
            asyncio.create_task(self._pump(upstream_reader, writer, link, from_client=False)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        from_client: bool,
    ) -> None:
        """Forward one direction, ``latency`` seconds late, in order."""
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(due, writer, link))
        try:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(BUFFER):
                    if not link.blackholed:  # else swallowed: the other side never hears
                        due.put_nowait((loop.time() + self.latency, data))
            due.put_nowait((loop.time() + self.latency, b""))  # end of stream, in its turn
            await sender
        finally:
            sender.cancel()
        # End of this direction. Normally the other side learns at once (close both).
        # A blackholed link hides the server's end from the client, but when the client
        # itself gives up, the link is finished.
        if link.blackholed and not from_client:
            return
        for task in link.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _send(
        self, due: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                when, data = await due.get()
                if not data:
                    return
                delay = when - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if link.blackholed:
                    continue  # queued before the blackhole, not delivered yet: lost too
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
