"""A client process that sends signals many at a time, as a service's handlers do.

``python -m apps.signal_sender RUNS_FILE ROUNDS`` (``DURABLEFLOW_DATABASE_URL`` in the
environment): for each round, signal ``item`` with payload ``{"r": round}`` to every run
listed in RUNS_FILE (one id per line), all at once (they commit together: group commit),
each with the key ``<run>:<round>``, so a run of this process after a killed one stores
only what the killed one did not. Prints ``round <n>`` as each round returns, ``done``
at the end.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from durableflow import Flow


async def main(runs: list[str], rounds: int) -> None:
    async with Flow() as flow:
        for n in range(rounds):
            await asyncio.gather(
                *(
                    flow.send_signal(run, "item", {"r": n}, idempotency_key=f"{run}:{n}")
                    for run in runs
                )
            )
            print(f"round {n}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]).read_text().split(), int(sys.argv[2])))
