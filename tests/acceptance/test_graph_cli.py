"""``durableflow graph show | list`` and the graph sections of ``runs show``, as an
operator runs them; the Mermaid printed is read back by the real Mermaid parser."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from apps import graph_app
from apps.harness import FAST_WORKER_SETTINGS, Processes, wait_until

import _mermaid

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

APP = "apps.graph_app:flow"


async def test_graph_show_prints_mermaid_with_the_current_state_and_runs_show_draws_it(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    _mermaid.require()
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS}
    processes.worker("worker", APP, {**env, "HOLD_STATES": "1"})
    client = graph_app.build_flow(ledger_url)
    async with client:
        await client.publish_graph(graph_app.PUBLISHED_SPEC)
        run_id = await client.start(graph_app.LINE, input={"n": 1}, queue="default")
        await wait_until(
            "SELECT EXISTS (SELECT 1 FROM public.ledger WHERE run_id = $1 AND step_id = 2)",
            db,
            run_id,
            timeout=30,
            message="the run to enter the hold state",
        )
    dsn = ["--dsn", ledger_url]
    plain, current, shown, published, listed, missing = await asyncio.gather(
        processes.run(["graph", "show", APP, graph_app.LINE]),
        processes.run(["graph", "show", APP, graph_app.LINE, "--run", str(run_id), "--json"], env),
        processes.run(["runs", "show", str(run_id), "-a", APP, "--json", *dsn]),
        processes.run(["graph", "show", APP, graph_app.PUBLISHED, *dsn]),
        processes.run(["graph", "list", "--json", *dsn]),
        processes.run(["graph", "show", APP, "no.such.graph", *dsn]),
    )
    for completed in (plain, current, shown, published, listed):
        assert completed.returncode == 0, completed
    assert missing.returncode == 1 and "no.such.graph" in missing.stderr, missing

    highlighted = json.loads(current.stdout)
    assert (highlighted["current"], highlighted["version"]) == ("hold", 1)
    sections = json.loads(shown.stdout)["sections"]
    picture = sections["graph"]
    assert picture["kind"] == "diagram" and picture["value"] == highlighted["mermaid"]
    history = sections["graph_history"]["rows"]
    assert [(row[0], row[4]) for row in history] == [("first", "hold"), ("hold", "-")]
    assert [(g["name"], g["version"]) for g in json.loads(listed.stdout)] == [
        (graph_app.PUBLISHED, 1)
    ]

    texts = [plain.stdout, highlighted["mermaid"], published.stdout]
    results = _mermaid.parse(texts)
    for text, result in zip(texts, results, strict=True):
        assert result["ok"], f"{result.get('error')}\n{text}"
        assert result["type"] == "stateDiagram"
    line, running, data_defined = results
    by_name = named_states(line)
    assert set(by_name) == {"first", "hold", "done"}
    assert all("current" not in s["classes"] for s in line["states"].values())
    assert running["states"][by_name["hold"]]["classes"] == ["current"]
    assert running["states"][by_name["done"]]["classes"] == ["terminal"]
    approval = data_defined["states"][named_states(data_defined)["approval"]]
    assert approval["classes"] == ["manual"]
    assert "waits for signal approve" in _mermaid.decode(approval["descriptions"][1])


def named_states(parsed: dict[str, Any]) -> dict[str, str]:
    """State name -> Mermaid id, for the states (not the start and end markers)."""
    return {
        _mermaid.decode(state["descriptions"][0]): key
        for key, state in parsed["states"].items()
        if state["descriptions"]
    }
