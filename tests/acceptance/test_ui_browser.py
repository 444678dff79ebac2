"""The web UI in a real browser: Playwright driving the system's Chromium.

The UI is served by uvicorn in the test's event loop, over a Flow whose worker runs
in the same loop, so the test steers its runs with events. Playwright never downloads
a browser: it launches ``/usr/bin/chromium`` (``.ci/run`` installs it when missing).

With ``DURABLEFLOW_UI_SCREENSHOTS=docs/img`` the screenshots of the main pages are
written there (that is how docs/img/ was made); otherwise to the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from _serve import serve
from durableflow import Flow, FlowContext
from durableflow.admin import RunSection, SectionContent, register_run_section
from durableflow.admin.sections import unregister_run_section

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "s3cret-token"
HOSTILE = "<script>window.__pwned = true</script><img src=x onerror='window.__pwned = true'>"
REPO_ROOT = Path(__file__).resolve().parents[2]

SAMPLE_DIAGRAM = """stateDiagram-v2
    [*] --> email_pending
    email_pending --> verified
    email_pending --> expired
    verified --> [*]
    expired --> [*]
    classDef current fill:#f5b642,stroke:#8a5a00,stroke-width:3px
    class verified current
"""

if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it
    _missing = f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(_missing, pytrace=False)
    pytest.skip(_missing, allow_module_level=True)
playwright_api = pytest.importorskip("playwright.async_api")
pytest.importorskip("uvicorn")


@dataclass
class UI:
    flow: Flow
    url: str
    gate: asyncio.Event


def build_flow(database_url: str, gate: asyncio.Event) -> Flow:
    flow = Flow(database_url=database_url, poll_interval=0.05, shutdown_grace=0.0)

    @flow.step()
    async def fetch(ctx: FlowContext, n: int) -> int:
        await asyncio.sleep(0.05)
        return n + 1

    @flow.step()
    async def wait_for_gate(ctx: FlowContext, n: int) -> dict[str, Any]:
        await gate.wait()
        return {"n": n, "html": HOSTILE}

    @flow.workflow(name="ui.pipeline", version=1)
    async def pipeline(ctx: FlowContext, n: int) -> dict[str, Any]:
        return await wait_for_gate(ctx, await fetch(ctx, n))

    @flow.workflow(name="user.onboarding", version=1)
    async def onboarding(ctx: FlowContext, n: int) -> int:
        return await fetch(ctx, n)

    return flow


@contextlib.asynccontextmanager
async def serve_url(app: Any) -> AsyncIterator[str]:
    async with serve(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture
async def ui(database_url: str) -> AsyncIterator[UI]:
    gate = asyncio.Event()
    flow = build_flow(database_url, gate)
    async with flow, flow.worker(4), serve_url(flow.admin_app(token=TOKEN)) as url:
        yield UI(flow, url, gate)
        gate.set()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = os.environ.get("DURABLEFLOW_UI_SCREENSHOTS")
    directory = (REPO_ROOT / target) if target else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def new_page(browser: Any) -> tuple[Any, Any, list[str]]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return context, page, problems


async def test_runs_update_live_and_the_detail_shows_steps_escaped(
    ui: UI, browser: Any, shots: Path
) -> None:
    expect = playwright_api.expect
    done = await ui.flow.start("user.onboarding", input=1)
    await ui.flow.result(done, timeout=10)
    run_id = await ui.flow.start("ui.pipeline", input=41, correlation_id="order-41")
    context, page, problems = await new_page(browser)
    await page.goto(ui.url + "/")
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    await expect(row.locator(".status")).to_have_text("running", timeout=10_000)
    await page.evaluate("window.__still_this_page = true")
    await page.screenshot(path=str(shots / "ui-runs.png"), full_page=True)

    ui.gate.set()  # the run finishes; the page learns it by server-sent events
    await expect(row.locator(".status")).to_have_text("succeeded", timeout=10_000)
    assert await page.evaluate("window.__still_this_page") is True  # no reload happened

    await page.fill("input[name=q]", "order-41")  # search by correlation id
    await page.click("button[type=submit]")
    await expect(page.locator("tr.run")).to_have_count(1)
    await page.click(f'a[href$="/runs/{run_id}"]')
    await expect(page.locator("#run-status")).to_have_text("succeeded")
    steps = page.locator("#steps tr.step")
    await expect(steps).to_have_count(2)
    assert await steps.nth(0).get_attribute("data-step") == "fetch"
    assert await steps.nth(1).get_attribute("data-step") == "wait_for_gate"
    durations = [await steps.nth(i).locator("td").nth(5).inner_text() for i in (0, 1)]
    assert all(d.endswith(("ms", "s")) for d in durations), durations

    # The hostile output is shown as text and never runs.
    assert HOSTILE in await page.locator("#run-output").inner_text()
    assert await page.locator("#run-body script, #run-body img").count() == 0
    assert await page.evaluate("window.__pwned") is None
    await page.screenshot(path=str(shots / "ui-run.png"), full_page=True)

    await page.goto(ui.url + "/workers")
    await expect(page.locator("tr.worker[data-alive=true]")).to_have_count(1)
    await page.screenshot(path=str(shots / "ui-workers.png"), full_page=True)
    assert problems == []
    await context.close()


async def test_cancel_needs_the_token(ui: UI, browser: Any, database_url: str) -> None:
    expect = playwright_api.expect
    run_id = await ui.flow.start("ui.pipeline", input=1)
    context, page, problems = await new_page(browser)
    run_url = f"{ui.url}/runs/{run_id}"
    action_url = f"{run_url}/actions/cancel"
    await page.goto(run_url)
    await expect(page.locator("#run-status")).to_have_text("running", timeout=10_000)
    assert await page.locator("button[data-action=cancel]").is_disabled()

    refused = await page.request.post(action_url)
    assert refused.status == 403
    assert (await ui.flow.status(run_id)).status == "running"

    await page.click("text=log in to act")
    await page.fill("input[name=token]", "wrong")
    await page.click("button[type=submit]")
    await expect(page.locator("p.error")).to_have_text("That is not the UI token.")
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(run_url)
    cookies = await context.cookies()
    assert [c["httpOnly"] for c in cookies if c["name"] == "durableflow_session"] == [True]

    # Logged in, but without the page's CSRF token, or from another origin: refused.
    without_csrf = await page.request.post(action_url, form={"reason": "x"})
    assert without_csrf.status == 403
    csrf = await page.locator("input[name=csrf_token]").first.input_value()
    cross_site = await page.request.post(
        action_url, form={"csrf_token": csrf}, headers={"Origin": "http://evil.example"}
    )
    assert cross_site.status == 403
    assert (await ui.flow.status(run_id)).status == "running"

    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("button[data-action=cancel]")
    await expect(page.locator("p.notice")).to_have_text("cancelled")
    await expect(page.locator("#run-status")).to_have_text("cancelled")
    assert (await ui.flow.status(run_id)).status == "cancelled"

    # An API client with the token in a header needs no cookie and no CSRF token.
    api = await page.request.post(
        f"{run_url}/actions/resume", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert api.status == 200 and (await api.json())["message"] == "queued again"
    assert [p for p in problems if "status of 403" not in p] == []  # the wrong token's page
    await context.close()

    async with serve_url(ui.flow.admin_app(token="")) as read_only:
        other = await browser.new_context()
        response = await other.request.post(
            f"{read_only}/runs/{run_id}/actions/cancel",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status == 403
        assert "read-only" in await response.text()
        await other.close()


async def test_a_diagram_section_is_drawn_with_the_current_state(
    ui: UI, browser: Any, shots: Path
) -> None:
    async def picture(flow: Any, run: Any) -> SectionContent | None:
        if run.workflow != "user.onboarding":
            return None
        return SectionContent.diagram(SAMPLE_DIAGRAM, caption="current state: verified")

    register_run_section(RunSection("graph", "Graph", picture, order=50))
    try:
        run_id = await ui.flow.start("user.onboarding", input=1)
        await ui.flow.result(run_id, timeout=10)
        context, page, problems = await new_page(browser)
        await page.goto(f"{ui.url}/runs/{run_id}")
        svg = page.locator("#section-graph svg")
        await playwright_api.expect(svg).to_have_count(1, timeout=15_000)
        highlighted = page.locator("#section-graph svg g.current")
        await playwright_api.expect(highlighted).to_have_count(1)
        assert "verified" in (await highlighted.text_content() or "")
        fill = await highlighted.locator("rect, path").first.evaluate(
            "element => getComputedStyle(element).fill"
        )
        assert fill == "rgb(245, 182, 66)"  # the classDef's fill: the current state stands out
        await page.screenshot(path=str(shots / "ui-graph.png"), full_page=True)
        assert problems == []
        await context.close()
    finally:
        unregister_run_section("graph")
