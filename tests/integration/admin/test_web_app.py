"""The admin ASGI app served by uvicorn: mounted under a path, escaping, refusals."""

from __future__ import annotations

import asyncio

import pytest

from _serve import serve
from durableflow import Flow, FlowContext

pytest.importorskip("uvicorn")
starlette_routing = pytest.importorskip("starlette.routing")
starlette_applications = pytest.importorskip("starlette.applications")


async def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """One HTTP/1.1 request on a fresh connection; the status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if method == "POST":
        lines.append("Content-Length: 0")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
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
