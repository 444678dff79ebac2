"""Writes made by several client processes at once, as services' API handlers make them:
queued starts, and signals.

K client processes (no worker), each with its own Flow, write for the same few seconds,
one write after another, or ``--in-flight N`` at a time (N tasks of one process, as a
service's concurrent request handlers): *starts* of queued runs (``flow.start(wf,
input=3, queue="default")``), or *signals* (``flow.send_signal(run, "ping", n)``, each
task to one run of its own that waits, a start delayed by an hour, so every send bumps
the run's wake-up sequence and announces it). One connection LISTENs on the run and
wake channels, as an idle worker would. Beside them, in the same run, K x N connections
of one process commit single-row INSERTs into a narrow table (the raw commit rate of
that many connections). The ratio of the two is what the writes keep of the server's
commit rate when many clients write at once.

This is the workload the NOTIFY's cluster-wide lock serialized (see
``src/durableflow/_store/wakeups.py``): with the NOTIFY in the write's own transaction,
each commit, WAL flush included, waited for the previous one's. How much that costs
depends on the commit's flush time, so each measurement runs in two databases: one
with the server's settings, and one whose commits each wait ``--commit-delay``
microseconds more before their flush (``commit_delay``, with ``commit_siblings = 0``),
the flush time of a disk slower than this machine's, such as a network volume. The
clients run on the same 2 cores as the server here, so with fast commits the clients'
CPU is the bound.

Usage: python bench/concurrent_clients_bench.py [DSN] [--writes starts signals]
[--clients K ...] [--in-flight N] [--seconds S] [--rounds R] [--commit-delay US]
(DSN: a server whose
user may create databases and set ``commit_delay`` (a superuser), default
``DURABLEFLOW_BENCH_DSN`` or the local server; the databases are dropped afterwards).
Prints one JSON line: per database, kind of write and K, the median writes/s, raw
commits/s and their ratio, and the notifications the listener received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from durableflow_bench import build_flow

from durableflow._store.store import notify_channel
from durableflow._store.waits import wake_channel

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WARM_UP = 20
SETTLE = 3.0  # seconds for the children to import, connect and warm up before the start


async def client(dsn: str, what: str, begin: float, seconds: float, in_flight: int) -> int:
    """One client process: ``in_flight`` tasks write ``what`` from ``begin``
    (time.time()) for ``seconds``, each one write after another."""
    flow, wf = build_flow(dsn)

    async def task() -> int:
        if what == "starts":

            async def write(_: int) -> None:
                await flow.start(wf, input=3, queue="default")

        else:
            target = await flow.start(wf, input=3, delay=3600)  # waits: nobody runs it

            async def write(n: int) -> None:
                await flow.send_signal(target, "ping", n)

        for n in range(WARM_UP):
            await write(n)
        await asyncio.sleep(max(0.0, begin - time.time()))
        end, written = begin + seconds, 0
        while time.time() < end:
            await write(written)
            written += 1
        return written

    try:
        return sum(await asyncio.gather(*(task() for _ in range(in_flight))))
    finally:
        await flow.close()


async def raw_commits(dsn: str, clients: int, seconds: float) -> float:
    """``clients`` connections committing single-row INSERTs: commits/s."""
    connections = [await asyncpg.connect(dsn) for _ in range(clients)]
    try:
        await connections[0].execute(
            "CREATE TABLE IF NOT EXISTS bench_raw_starts"
            " (id uuid PRIMARY KEY, queue text, input jsonb)"
        )

        async def loop(connection: asyncpg.Connection, end: float) -> int:
            done = 0
            while time.perf_counter() < end:
                await connection.execute(
                    "INSERT INTO bench_raw_starts VALUES ($1, 'default', '3')", uuid.uuid4()
                )
                done += 1
            return done

        t = time.perf_counter()
        counts = await asyncio.gather(*[loop(c, t + seconds) for c in connections])
        return sum(counts) / (time.perf_counter() - t)
    finally:
        for connection in connections:
            await connection.close()


def writes(dsn: str, what: str, clients: int, in_flight: int, seconds: float) -> float:
    """``clients`` processes writing ``what`` at once, ``in_flight`` at a time each:
    writes/s."""
    begin = time.time() + SETTLE
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                dsn,
                what,
                str(begin),
                str(seconds),
                str(in_flight),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    counts = [int(child.communicate(timeout=SETTLE + seconds + 120)[0]) for child in children]
    if any(child.returncode for child in children):
        raise SystemExit("a client process failed")
    return sum(counts) / seconds


async def measure(
    dsn: str, kinds: list[str], clients: list[int], in_flight: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """The figures in the migrated database ``dsn``, per kind of write and number of
    clients."""
    received = 0

    def on_notify(*_: object) -> None:
        nonlocal received
        received += 1

    listener = await asyncpg.connect(dsn)
    await listener.add_listener(notify_channel("durableflow"), on_notify)
    await listener.add_listener(wake_channel("durableflow"), on_notify)
    figures: dict[str, Any] = {}
    try:
        for what in kinds:
            for k in clients:
                written, raw = [], []
                for _ in range(rounds):
                    written.append(
                        await asyncio.to_thread(writes, dsn, what, k, in_flight, seconds)
                    )
                    raw.append(await raw_commits(dsn, k * in_flight, seconds))
                name = f"{what}_clients_{k}" + (f"_in_flight_{in_flight}" if in_flight > 1 else "")
                figures[name] = {
                    "per_s": round(statistics.median(written)),
                    "raw_commits_per_s": round(statistics.median(raw)),
                    "ratio": round(
                        statistics.median(w / r for w, r in zip(written, raw, strict=True)), 3
                    ),
                    "rounds": [round(w) for w in written],
                }
    finally:
        await listener.close()
    figures["notifications_received"] = received
    return figures


async def run(
    dsn: str,
    kinds: list[str],
    clients: list[int],
    in_flight: int,
    seconds: float,
    rounds: int,
    commit_delay: int,
) -> dict[str, Any]:
    admin = await asyncpg.connect(dsn)
    figures: dict[str, Any] = {}
    try:
        for delay in (0, commit_delay):
            database = f"df_clients_{uuid.uuid4().hex[:8]}"
            await admin.execute(f'CREATE DATABASE "{database}"')
            try:
                if delay:
                    await admin.execute(f'ALTER DATABASE "{database}" SET commit_delay = {delay}')
                    await admin.execute(f'ALTER DATABASE "{database}" SET commit_siblings = 0')
                target = urlsplit(dsn)._replace(path=f"/{database}").geturl()
                flow, _ = build_flow(target)
                await flow.migrate()
                await flow.close()
                figures[f"commit_delay_{delay}_us"] = await measure(
                    target, kinds, clients, in_flight, seconds, rounds
                )
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        dsn, what, begin, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
        print(asyncio.run(client(dsn, what, begin, seconds, int(sys.argv[6]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", nargs="?", default=os.environ.get("DURABLEFLOW_BENCH_DSN"))
    parser.add_argument(
        "--writes", nargs="+", choices=["starts", "signals"], default=["starts", "signals"]
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--in-flight", type=int, default=1, help="writes at once per client")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commit-delay", type=int, default=1000, help="microseconds")
    args = parser.parse_args()
    figures = asyncio.run(
        run(
            args.dsn or DEFAULT_DSN,
            args.writes,
            args.clients,
            args.in_flight,
            args.seconds,
            args.rounds,
            args.commit_delay,
        )
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
