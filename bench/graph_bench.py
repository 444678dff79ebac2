"""durableflow's half of the graph benchmark (the peer is ``langgraph_bench.py``).

The same work as ``../shared/bench/langgraph_bench.py``, on durableflow, in one
worker process: a graph of NODES states in a line (payload ``{"x": int}``, each
handler adds 1, the last state is terminal), run

  seq_ms_per_transition   W graphs one after another; ms per state (handler step +
                          recorded transition), comparable to LangGraph's ms per node
  conc_graphs_per_s       C graphs at once

and, in the same process and database, the baseline the issue compares a transition
with: a workflow of NODES trivial steps (``seq_ms_per_step``), so
``seq_ms_per_transition / seq_ms_per_step`` is the cost of a transition in steps.

Graph runs need ``flow.register_graph`` (graph runs, phase 2 of issue #10); until it
exists this script says so and exits with status 2.

Usage: python bench/graph_bench.py DSN   (an empty database; the schema is created)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from durableflow_bench import build_flow as build_workflow_flow

from durableflow import Flow, Graph

W, NODES, C = 100, 10, 100
CONCURRENCY = 200  # more than C, so concurrent runs never wait for a slot
RESULT_TIMEOUT = 600.0
GRAPH = "bench.line"


def build_graph() -> Graph:
    """NODES states in a line, ``n0`` to ``n{NODES-1}`` (terminal), each adding 1 to x."""
    g = Graph(name=GRAPH, version=1, initial="n0")

    async def add_one(ctx: Any, payload: dict[str, int]) -> dict[str, int]:
        return {"x": payload["x"] + 1}

    for index in range(NODES):
        g.add_state(f"n{index}", add_one, terminal=index == NODES - 1)
        if index:
            g.transition(f"n{index - 1}", f"n{index}")
    g.validate()
    return g


def build_flow(dsn: str) -> Flow:
    """The core benchmark's Flow (its 10-step workflow ``wf`` is the yardstick) + the graph."""
    flow, _ = build_workflow_flow(dsn)
    register = getattr(flow, "register_graph", None)
    if register is None:
        print(
            "graph_bench.py: flow.register_graph does not exist yet (graph runs, phase 2 "
            "of issue #10); run bench/run_graph_bench.py --peer-only to measure LangGraph",
            file=sys.stderr,
        )
        sys.exit(2)
    register(build_graph())
    return flow


async def sequential(flow: Flow, workflow: str, payload: object, expected: object) -> float:
    """Seconds for W runs of ``workflow`` one after another."""
    t = time.perf_counter()
    for _ in range(W):
        run_id = await flow.start(workflow, input=payload)
        assert await flow.result(run_id, timeout=RESULT_TIMEOUT) == expected
    return time.perf_counter() - t


async def run(dsn: str) -> dict[str, object]:
    flow = build_flow(dsn)
    await flow.migrate()
    done = {"x": NODES}
    try:
        async with flow.worker(concurrency=CONCURRENCY):
            for workflow, payload, expected in ((GRAPH, {"x": 0}, done), ("wf", NODES, NODES)):
                warm = await flow.start(workflow, input=payload)  # connections, hashes
                assert await flow.result(warm, timeout=RESULT_TIMEOUT) == expected
            # Interleaved, so both figures see the same load on a shared machine.
            graph_seq = await sequential(flow, GRAPH, {"x": 0}, done)
            step_seq = await sequential(flow, "wf", NODES, NODES)

            t = time.perf_counter()
            run_ids = await asyncio.gather(*[flow.start(GRAPH, input={"x": 0}) for _ in range(C)])
            results = await asyncio.gather(
                *[flow.result(r, timeout=RESULT_TIMEOUT) for r in run_ids]
            )
            assert all(r == done for r in results)
            conc = time.perf_counter() - t
    finally:
        await flow.close()
    return {
        "system": "durableflow",
        "seq_ms_per_transition": round(graph_seq / W / NODES * 1000, 3),
        "seq_ms_per_graph": round(graph_seq / W * 1000, 2),
        "conc_graphs_per_s": round(C / conc, 1),
        "seq_ms_per_step": round(step_seq / W / NODES * 1000, 3),
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/graph_bench.py DSN  (an empty Postgres database)")
    print(json.dumps(asyncio.run(run(sys.argv[1]))))


if __name__ == "__main__":
    main()
