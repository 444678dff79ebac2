"""Storage benchmark: small-artefact throughput and a large streamed write's memory.

Measures, for the filesystem provider and the S3 provider against a local moto server:

- writes/s and reads/s of 2 KB artefacts (each write = object + JSON sidecar, each read =
  both plus the sha256 check), with 32 writes or reads in flight;
- a 200 MB ``write_stream`` (and the ``read_stream`` back), reporting this process's peak
  RSS above its baseline, sampled every 5 ms with psutil.

moto runs in its own process so the benchmark's event loop does not share a GIL with
it. moto is a test double written in Python: its S3 figures measure moto, not S3.

Run: ``.venv/bin/python bench/storage_bench.py`` (``--help`` for options). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psutil

from durableflow.storage import (
    BaseStorageProvider,
    FilesystemStorageProvider,
    S3StorageProvider,
    StorageMetadata,
)

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MotoServer:
    """``python -m moto.server`` on a free loopback port, with one bucket."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MotoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
                urllib.request.urlopen(request, timeout=2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


async def run_concurrently(
    count: int, concurrency: int, job: Callable[[int], Awaitable[object]]
) -> float:
    """Run ``job(0..count-1)`` with ``concurrency`` in flight; return the elapsed seconds."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker() -> None:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await job(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def small_artefacts(
    storage: BaseStorageProvider, count: int, concurrency: int
) -> dict[str, float]:
    payload = os.urandom(2048)
    keys = [f"executions/bench/main/stage-{i % 50:02d}/msg-{i:06d}.bin" for i in range(count)]
    metadata = StorageMetadata(step_name="bench", config_hash="c" * 16, code_hash="d" * 16)

    async def write(index: int) -> None:
        await storage.write(keys[index], payload, metadata)

    async def read(index: int) -> None:
        assert await storage.read(keys[index]) == payload

    write_seconds = await run_concurrently(count, concurrency, write)
    read_seconds = await run_concurrently(count, concurrency, read)
    return {
        "writes_per_s": count / write_seconds,
        "reads_per_s": count / read_seconds,
        "write_ms_mean": 1000 * write_seconds * concurrency / count,
        "read_ms_mean": 1000 * read_seconds * concurrency / count,
    }


async def raw_s3_requests(
    storage: S3StorageProvider, count: int, concurrency: int
) -> dict[str, float]:
    """Bare obstore PUT/GET of 2 KB objects: what the server allows, for scale.

    A durableflow write is two PUTs (object, sidecar) and a read two GETs, so about
    half these rates is the ceiling the server sets.
    """
    import obstore

    store = storage._store  # the provider's own client: same connection pool and settings
    payload = os.urandom(2048)

    async def put(index: int) -> None:
        await obstore.put_async(store, f"raw/{index:06d}", payload)

    async def get(index: int) -> None:
        result = await obstore.get_async(store, f"raw/{index:06d}")
        await result.bytes_async()

    put_seconds = await run_concurrently(count, concurrency, put)
    get_seconds = await run_concurrently(count, concurrency, get)
    await obstore.delete_async(store, [f"raw/{index:06d}" for index in range(count)])
    return {"raw_puts_per_s": count / put_seconds, "raw_gets_per_s": count / get_seconds}


class RssSampler:
    """Samples this process's RSS in a background task; reports the peak."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> RssSampler:
        self.peak = self.process.memory_info().rss
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, self.process.memory_info().rss)


async def large_stream(storage: BaseStorageProvider, megabytes: int) -> dict[str, float]:
    chunk = os.urandom(MIB)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(megabytes):
            yield chunk

    key = "executions/bench/main/large/blob.bin"
    baseline = psutil.Process().memory_info().rss
    async with RssSampler() as write_rss:
        started = time.perf_counter()
        stored = await storage.write_stream(key, chunks())
        write_seconds = time.perf_counter() - started
    assert stored.size == megabytes * MIB
    async with RssSampler() as read_rss:
        started = time.perf_counter()
        received = 0
        async for piece in storage.read_stream(key, chunk_size=4 * MIB):
            received += len(piece)
        read_seconds = time.perf_counter() - started
    assert received == stored.size
    await storage.delete(key)
    return {
        "stream_mb": megabytes,
        "write_mb_per_s": megabytes / write_seconds,
        "read_mb_per_s": megabytes / read_seconds,
        "baseline_rss_mib": baseline / MIB,
        "write_peak_rss_above_baseline_mib": (write_rss.peak - baseline) / MIB,
        "read_peak_rss_above_baseline_mib": (read_rss.peak - baseline) / MIB,
    }


async def bench_backend(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One backend, measured in this (fresh) process: the large stream first, so its RSS
    baseline is not inflated by memory the small-artefact phase left in the allocator."""
    count = args.count if name == "filesystem" else args.s3_count
    root = tempfile.mkdtemp(prefix="durableflow-bench-", dir=args.root)
    try:
        with MotoServer("bench") if name == "s3" else _no_server() as moto:
            storage: BaseStorageProvider
            if moto is None:
                storage = FilesystemStorageProvider(root)
            else:
                storage = S3StorageProvider(
                    "bench",
                    endpoint=moto.endpoint,
                    region="us-east-1",
                    access_key_id="bench",
                    secret_access_key="bench",
                )
            async with storage:
                large = await large_stream(storage, args.stream_mb) if args.stream_mb else {}
                small = await small_artefacts(storage, count, args.concurrency)
                if isinstance(storage, S3StorageProvider):
                    small.update(await raw_s3_requests(storage, count, args.concurrency))
                removed = await storage.delete_prefix("executions/bench")
                assert removed == count, (removed, count)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "backend": "s3 (moto server)" if name == "s3" else name,
        "artefacts": count,
        **small,
        **large,
        "process_lifetime_peak_rss_mib": lifetime_peak / MIB,
    }


@contextlib.contextmanager
def _no_server() -> Iterator[None]:
    yield None


def print_result(result: dict[str, Any]) -> None:
    print(f"\n== {result['backend']} ({result['artefacts']} x 2 KB, 32 in flight)")
    for key, value in result.items():
        if key in {"backend", "artefacts"}:
            continue
        print(f"  {key:38s} {value:10.1f}" if isinstance(value, float) else f"  {key:38s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=4000, help="2 KB artefacts on filesystem")
    parser.add_argument("--s3-count", type=int, default=1000, help="2 KB artefacts on moto")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream-mb", type=int, default=200, help="0 skips the large write")
    parser.add_argument("--backends", default="filesystem,s3")
    parser.add_argument("--root", default=None, help="folder for the filesystem provider")
    parser.add_argument("--json", action="store_true", help="print results as JSON too")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(asyncio.run(bench_backend(args.child, args))))
        return
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.platform()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    results = []
    for backend in args.backends.split(","):
        # A fresh process per backend, so one backend's memory does not hide the next's.
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--child", backend],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print_result(result)
        results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
