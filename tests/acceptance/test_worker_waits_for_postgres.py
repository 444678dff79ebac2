"""``durableflow worker`` started before Postgres answers waits for it, then serves."""

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit, urlunsplit

import pytest
from apps.harness import FAST_WORKER_SETTINGS, Processes

from durableflow import Flow

pytestmark = pytest.mark.acceptance


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def forward(port: int, target_host: str, target_port: int) -> asyncio.Server:
    """A plain TCP forwarder: Postgres "comes up" on ``port`` when this starts."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_the_worker_waits_for_postgres_and_then_serves(
    ledger_url: str, processes: Processes
) -> None:
    database_url = ledger_url
    real = urlsplit(database_url)
    port = free_port()
    proxied = urlunsplit(real._replace(netloc=f"{real.username}@127.0.0.1:{port}"))
    worker = processes.worker(
        "early",
        "apps.crash_app:flow",
        {**FAST_WORKER_SETTINGS, "DURABLEFLOW_DATABASE_URL": proxied},
    )
    await worker.wait_for_output("attempt 2", 20)  # one line per attempt, still alive
    assert worker.returncode is None
    assert worker.stderr().count("worker_waiting_for_database") >= 2
    server = await forward(port, real.hostname or "127.0.0.1", real.port or 5432)
    try:
        await worker.wait_for_output("running", 60, stream="stdout")
        client = Flow(database_url=database_url)

        @client.workflow(name="crash.ten_steps", version=1)
        async def ten_steps(ctx: object, start: int) -> int:
            raise AssertionError("runs on the worker")

        async with client:
            run_id = await client.start("crash.ten_steps", 0, queue="default")
            assert await client.result(run_id, timeout=60) == 55
    finally:
        worker.kill()
        server.close()
        await server.wait_closed()
