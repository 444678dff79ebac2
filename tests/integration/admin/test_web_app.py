"""The admin ASGI app served by uvicorn: mounted under a path, escaping, refusals."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

import pytest

from _serve import serve
from durableflow import Flow, FlowContext

pytest.importorskip("uvicorn")
starlette_routing = pytest.importorskip("starlette.routing")
starlette_applications = pytest.importorskip("starlette.applications")


async def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """One HTTP/1.1 request on a fresh connection; the status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    body = urlencode(form or {}).encode()
    if method == "POST":
        lines.append("Content-Type: application/x-www-form-urlencoded")
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    status_line, *header_lines = head.split("\r\n")
    parsed = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), parsed, body


async def test_mounted_under_a_path_with_escaped_output_and_refused_actions(
    database_url: str,
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="echo", version=1)
    async def echo(ctx: FlowContext, text: str) -> str:
        return text

    host = starlette_applications.Starlette(
        routes=[starlette_routing.Mount("/ops", app=flow.admin_app(token="t0ken"))]
    )
    async with flow, flow.worker(1), serve(host) as port:
        run_id = await flow.start("echo", input="</pre><script>alert(1)</script>")
        await flow.result(run_id, timeout=10)

        status, headers, body = await request(port, "GET", "/ops/")
        assert status == 200
        assert "script-src 'self'" in headers["content-security-policy"]
        assert 'href="/ops/runs/' in body and 'src="/ops/static/app.js"' in body

        status, _, body = await request(port, "GET", f"/ops/runs/{run_id}")
        assert status == 200
        assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in body
        assert "<script>alert" not in body

        status, _, body = await request(port, "GET", "/ops/runs/not-a-run")
        assert status == 404 and "no run with id" in body
        status, _, body = await request(port, "GET", "/ops/graphs")
        assert status == 200 and "no graph yet" in body and 'href="/ops/graphs"' in body
        status, _, body = await request(port, "GET", "/ops/graphs?name=echo&version=one")
        assert status == 400 and "version is a number" in body
        status, _, body = await request(port, "GET", "/ops/graphs?name=echo")
        assert status == 404 and "no graph &#39;echo&#39;" in body  # a workflow, not a graph
        status, _, _ = await request(port, "GET", f"/ops/runs/{run_id}/actions/resume")
        assert status == 405  # actions are POST only
        status, _, body = await request(port, "POST", f"/ops/runs/{run_id}/actions/resume")
        assert status == 403 and "UI token" in body
        status, _, _ = await request(
            port,
            "POST",
            f"/ops/runs/{run_id}/actions/resume",
            {"Authorization": "Bearer t0ken", "Origin": "http://elsewhere.example"},
        )
        assert status == 403  # even with the token: not from another origin
        status, _, body = await request(
            port, "POST", f"/ops/runs/{run_id}/actions/resume", {"Authorization": "Bearer t0ken"}
        )
        assert status == 409 and "succeeded" in body  # the token works; the run refuses
        status, _, body = await request(port, "GET", "/ops/static/vendor/mermaid/mermaid.min.js")
        assert status == 200 and len(body) > 1_000_000


async def test_action_input_is_validated_and_refusals_are_not_server_errors(
    database_url: str,
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05, max_wait_in_memory=0.0)

    @flow.workflow(name="gated", version=1)
    async def gated(ctx: FlowContext) -> object:
        return await ctx.wait_for_signal("go")

    @flow.workflow(name="tock", version=1)
    async def tock(ctx: FlowContext, tick: dict[str, object]) -> None:
        return None

    @flow.workflow(name="parent", version=1)
    async def parent(ctx: FlowContext) -> object:
        return await ctx.start_child("gated")

    token = {"Authorization": "Bearer t0ken"}
    async with flow, flow.worker(1), serve(flow.admin_app(token="t0ken")) as port:
        waiting = await flow.start("gated")
        finished = await flow.start("gated")
        await flow.cancel(finished)

        async def act(run_id: object, action: str, **form: str) -> tuple[int, dict[str, object]]:
            status, _, body = await request(
                port, "POST", f"/runs/{run_id}/actions/{action}", token, form
            )
            return status, json.loads(body)

        status, answer = await act(waiting, "signal", name="go", payload="{oops")
        assert status == 400 and "payload is not valid JSON" in str(answer["message"])
        status, answer = await act(waiting, "signal", name="", payload="1")
        assert status == 400 and "give the signal's name" in str(answer["message"])
        status, answer = await act(waiting, "signal", name="go", payload='"\\u0000"')
        assert status == 400 and answer["ok"] is False  # NUL refused by the payload check
        status, answer = await act(finished, "signal", name="go", payload="1")
        assert status == 409 and "cancelled" in str(answer["message"])
        status, answer = await act(finished, "fork", from_step="nope")
        assert status == 400 and "no step or state named 'nope'" in str(answer["message"])
        status, answer = await act(finished, "replay", from_stage="nope", config="[")
        assert status == 400 and "configuration is not valid JSON" in str(answer["message"])
        status, answer = await act("not-a-run", "signal", name="go")
        assert status == 404
        assert await flow.signals(waiting) == []

        status, answer = await act(waiting, "signal", name="go", payload='{"n": 1}')
        assert (status, answer) == (200, {"ok": True, "message": "signal 'go' sent"})
        assert await flow.result(waiting, timeout=10) == {"n": 1}

        await flow.create_schedule("every-night", "tock", "0 3 * * *")
        status, _, body = await request(
            port, "POST", "/schedules/actions/pause", token, {"name": "every-night"}
        )
        assert status == 200 and json.loads(body)["message"] == "schedule 'every-night' paused"
        status, _, body = await request(
            port, "POST", "/schedules/actions/explode", token, {"name": "every-night"}
        )
        assert status == 404
        status, _, body = await request(port, "GET", "/lineage?key=../../etc/passwd")
        assert status == 400
        status, _, body = await request(port, "GET", "/lineage")
        assert status == 400
        status, _, body = await request(port, "GET", "/schedules")
        assert status == 200 and "every-night" in body and 'data-paused="true"' in body

        parent_id = await flow.start("parent")
        child_id = await flow.result(parent_id, timeout=10)
        status, _, body = await request(port, "GET", f"/runs/{parent_id}")
        assert status == 200 and 'id="section-children"' in body
        assert f'<a href="/runs/{child_id}" class="mono">{child_id}</a>' in body
        for _ in range(200):
            if (await flow.status(child_id)).status == "waiting":
                break
            await asyncio.sleep(0.05)
        status, _, body = await request(port, "GET", f"/runs/{child_id}")
        assert f'<dt>parent</dt><dd class="mono"><a href="/runs/{parent_id}">' in body
        assert 'id="section-waiting"' in body and "signal:go" in body


async def test_hostile_requests_get_a_clear_refusal_never_a_server_error(
    database_url: str,
) -> None:
    """What a script (or a hostile page) can send: each gets a 4xx and changes nothing."""
    flow = Flow(database_url=database_url, poll_interval=0.05, max_wait_in_memory=0.0)

    @flow.workflow(name="gated", version=1)
    async def gated(ctx: FlowContext) -> object:
        return await ctx.wait_for_signal("go")

    token = {"Authorization": "Bearer t0ken"}
    async with flow, flow.worker(1), serve(flow.admin_app(token="t0ken")) as port:
        waiting = await flow.start("gated")
        for _ in range(200):
            if (await flow.status(waiting)).status == "waiting":
                break
            await asyncio.sleep(0.05)

        # JSON nested deeper than the parser's recursion limit: bad input, not a crash.
        status, _, body = await request(
            port,
            "POST",
            f"/runs/{waiting}/actions/signal",
            token,
            {"name": "go", "payload": "[" * 100_000},
        )
        assert status == 400 and "payload is nested too deeply" in json.loads(body)["message"]

        # NUL in a filter: Postgres text cannot hold it, so no run can match.
        for query in ("q=%00", "workflow=a%00b", "queue=%00", "status=%00"):
            status, _, body = await request(port, "GET", f"/?{query}")
            assert status == 400 and "NUL" in body, query
            status, _, _ = await request(port, "GET", f"/live/runs?{query}")
            assert status == 400, query

        # '²' is a digit to str.isdigit() but not to int().
        status, _, body = await request(port, "GET", "/graphs?version=%C2%B2")
        assert status == 400 and "version is a number" in body

        # An action the page does not offer for the run (fork of a waiting run) is refused
        # by the server too, and starts nothing.
        status, _, body = await request(
            port, "POST", f"/runs/{waiting}/actions/fork", token, {"from_step": "1"}
        )
        assert status == 409 and "Fork does not apply to a waiting run" in body
        assert [run.id for run in await flow.list_runs()] == [waiting]

        # Logging out from another site: refused, the session cookie is left alone.
        status, headers, _ = await request(
            port, "POST", "/logout", {"Origin": "http://evil.example"}
        )
        assert status == 403 and "set-cookie" not in headers
        status, headers, _ = await request(port, "POST", "/logout")
        assert status == 303 and "durableflow_session=" in headers["set-cookie"]
        assert (await flow.status(waiting)).status == "waiting"
