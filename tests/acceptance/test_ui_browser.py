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
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from _serve import serve
from durableflow import Flow, FlowContext, Graph
from durableflow.errors import WorkflowFailed
from durableflow.graph.mermaid import CLASS_STYLES

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


def build_flow(database_url: str, gate: asyncio.Event, artefacts: Path) -> Flow:
    flow = Flow(
        database_url=database_url,
        poll_interval=0.05,
        shutdown_grace=0.0,
        max_wait_in_memory=0.0,  # a waiting run parks at once: status "waiting"
        storage=artefacts.as_uri(),
    )

    @flow.step(artefact=True)  # replayable from storage
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

    @flow.step()
    async def explode(ctx: FlowContext, n: int) -> int:
        raise ValueError(f"cannot take {n}: {HOSTILE}")

    @flow.workflow(name="ui.broken", version=1)
    async def broken(ctx: FlowContext, n: int) -> int:
        return await explode(ctx, n)

    review = Graph(name="ui.review", version=1, initial="submitted")

    @review.state("submitted")
    async def submitted(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @review.state("in review", manual=True, signal="decision")
    async def in_review(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @review.state("approved", terminal=True)
    async def approved(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    review.transition("submitted", "in review")
    review.transition("in review", "approved")
    flow.register_graph(review)

    @flow.action("stamp")  # for the graph the graphs page test publishes
    async def stamp(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "stamped": True}

    @flow.workflow(name="ui.approval", version=1)
    async def approval(ctx: FlowContext, order: str) -> Any:
        await ctx.set_event("stage", "awaiting approval")
        return {"order": order, "decision": await ctx.wait_for_signal("approve")}

    @flow.workflow(name="ui.report", version=1)
    async def report(ctx: FlowContext, tick: dict[str, Any]) -> str:
        return str(tick["scheduled_at"])

    return flow


@contextlib.asynccontextmanager
async def serve_url(app: Any) -> AsyncIterator[str]:
    async with serve(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture
async def ui(database_url: str, tmp_path: Path) -> AsyncIterator[UI]:
    gate = asyncio.Event()
    flow = build_flow(database_url, gate, tmp_path / "artefacts")
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


async def eventually(check: Any, message: str, timeout: float = 15.0) -> Any:
    """Poll ``check()`` until it returns something truthy; return it."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not (value := await check()):
        if loop.time() > give_up:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        await asyncio.sleep(0.05)
    return value


async def log_in(page: Any) -> None:
    """Log in with the UI token from the current page; back on it afterwards."""
    here = page.url
    await page.click("text=log in to act")
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await playwright_api.expect(page).to_have_url(here)


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

    leader = await eventually(ui.flow.leader, "the worker is elected leader")
    await page.goto(ui.url + "/workers")
    await expect(page.locator("tr.worker[data-alive=true]")).to_have_count(1)
    await expect(page.locator("#leader-worker")).to_have_text(leader.worker_id)
    await expect(page.locator("#leader-epoch")).to_have_text(str(leader.epoch))
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


async def test_a_graph_run_page_draws_the_graph_with_the_current_state(
    ui: UI, browser: Any, shots: Path
) -> None:
    expect = playwright_api.expect
    run_id = await ui.flow.start("ui.review", input={"doc": 1})
    for _ in range(200):
        status = await ui.flow.status(run_id)
        if status.state == "in review" and status.status in ("running", "waiting"):
            break
        await asyncio.sleep(0.05)
    assert status.state == "in review", status
    context, page, problems = await new_page(browser)
    await page.goto(f"{ui.url}/runs/{run_id}")
    svg = page.locator("#section-graph svg")
    await expect(svg).to_have_count(1, timeout=15_000)
    highlighted = page.locator("#section-graph svg g.current")
    await expect(highlighted).to_have_count(1)
    assert "in review" in (await highlighted.text_content() or "")
    fill = await highlighted.locator("rect, path").first.evaluate(
        "element => getComputedStyle(element).fill"
    )
    assert fill == css_rgb(CLASS_STYLES["current"])  # the current state stands out
    history = page.locator("#section-graph_history tbody tr")
    await expect(history).to_have_count(2)
    assert (await history.nth(0).locator("td").first.inner_text()) == "submitted"
    await page.screenshot(path=str(shots / "ui-graph.png"), full_page=True)

    # The run links to its graph's page: the graph drawn alone, no state highlighted.
    await page.click("#run-graph")
    pictures = page.locator("section.graph-picture")
    await expect(pictures).to_have_count(1)
    await expect(pictures.locator("svg")).to_have_count(1, timeout=15_000)
    assert await pictures.get_attribute("data-graph") == "ui.review"
    assert await pictures.locator("svg g.current").count() == 0

    # The graphs page: the graph in code and a published one, each drawn.
    published = await ui.flow.publish_graph(
        {
            "name": "ui.intake",
            "version": 3,
            "initial": "received",
            "states": [
                {"name": "received", "action": "stamp"},
                {"name": "triage", "manual": True, "signal": "triaged"},
                {"name": "closed", "terminal": True},
            ],
            "transitions": [
                {"from": "received", "to": "triage"},
                {"from": "triage", "to": "closed"},
            ],
        }
    )
    await page.click("nav >> text=Graphs")
    rows = page.locator("tr.graph")
    await expect(rows).to_have_count(2)
    intake = page.locator('tr.graph[data-graph="ui.intake"]')
    await expect(intake).to_have_attribute("data-origin", "published")
    await expect(intake.locator("td").nth(1)).to_have_text("3")
    await expect(intake.locator("td").nth(4)).to_have_text(published.hash[:12])
    await expect(intake.locator("td").nth(5)).not_to_have_text("-")
    code = page.locator('tr.graph[data-graph="ui.review"]')
    await expect(code).to_have_attribute("data-origin", "code")
    await expect(code.locator("td").nth(5)).to_have_text("-")  # never published
    drawn = page.locator('section.graph-picture[data-graph="ui.intake"] svg')
    await expect(drawn).to_have_count(1, timeout=15_000)
    assert "triage" in (await drawn.text_content() or "")
    await expect(page.locator("section.graph-picture svg")).to_have_count(2)
    await page.screenshot(path=str(shots / "ui-graphs.png"), full_page=True)
    missing = await page.goto(f"{ui.url}/graphs?name=ui.nothing")
    assert missing is not None and missing.status == 404
    assert [p for p in problems if "status of 404" not in p] == []
    await context.close()
    await ui.flow.send_signal(run_id, "decision", {"ok": True})
    assert await ui.flow.result(run_id, timeout=10) == {"doc": 1, "ok": True}


def css_rgb(style: str) -> str:
    """``fill:#dbeafe,...`` -> ``rgb(219, 234, 254)``, as getComputedStyle reports it."""
    colour = dict(part.split(":") for part in style.split(","))["fill"].lstrip("#")
    red, green, blue = (int(colour[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgb({red}, {green}, {blue})"


async def test_a_signal_sent_from_the_ui_reaches_the_waiting_run(
    ui: UI, browser: Any, shots: Path
) -> None:
    expect = playwright_api.expect
    run_id = await ui.flow.start("ui.approval", input="order-9", timeout=3600)
    context, page, problems = await new_page(browser)
    await page.goto(f"{ui.url}/runs/{run_id}")
    await expect(page.locator("#run-status")).to_have_text("waiting", timeout=10_000)
    await expect(page.locator("#run-waiting-for")).to_have_text("signal:approve")
    await expect(page.locator("#run-deadline")).not_to_be_empty()
    waiting = page.locator("#section-waiting")
    await expect(waiting).to_contain_text("approve")
    await expect(waiting).to_contain_text("deadline")
    await expect(page.locator("#section-events")).to_contain_text("awaiting approval")
    assert await page.locator("button[data-action=signal]").is_disabled()
    refused = await page.request.post(
        f"{ui.url}/runs/{run_id}/actions/signal", form={"name": "approve"}
    )
    assert refused.status == 403

    await log_in(page)
    form = page.locator("form[data-form=signal]")
    await form.locator("input[name=name]").fill("approve")
    await form.locator("textarea[name=payload]").fill('{"by": "ops", oops')
    await form.locator("button[type=submit]").click()
    await expect(page.locator("p.notice.failed")).to_contain_text("payload is not valid JSON")
    await expect(page.locator("#run-status")).to_have_text("waiting")
    assert await ui.flow.signals(run_id) == []

    form = page.locator("form[data-form=signal]")
    await form.locator("input[name=name]").fill("approve")
    await form.locator("textarea[name=payload]").fill('{"by": "ops"}')
    await page.screenshot(path=str(shots / "ui-run-waiting.png"), full_page=True)
    hostile = {"by": "<script>window.__pwned = true</script>"}
    await form.locator("textarea[name=payload]").fill(json.dumps(hostile))
    await form.locator("button[type=submit]").click()
    await expect(page.locator("p.notice")).to_have_text("signal 'approve' sent")
    await expect(page.locator("#run-status")).to_have_text("succeeded", timeout=10_000)
    assert await ui.flow.result(run_id, timeout=10) == {"order": "order-9", "decision": hostile}
    signals = page.locator("#section-signals")
    await expect(signals).to_contain_text("consumed")
    await expect(signals).to_contain_text(hostile["by"])  # shown as text...
    assert await page.evaluate("window.__pwned") is None  # ...never run
    assert await page.locator("#run-body script").count() == 0
    assert problems == []
    await context.close()


async def test_queues_and_schedules_pages_with_actions_behind_the_token(
    ui: UI, browser: Any, shots: Path
) -> None:
    expect = playwright_api.expect
    await ui.flow.configure_queue("emails", concurrency=3, rate_limit=(10, 60))
    await ui.flow.start("ui.pipeline", input=1, queue="emails")  # no worker serves it: queued
    await ui.flow.create_schedule("nightly-report", "ui.report", "0 3 * * *")
    context, page, problems = await new_page(browser)

    await page.goto(ui.url + "/queues")
    emails = page.locator('tr.queue[data-queue="emails"]')
    await expect(emails.locator("[data-limit=concurrency]")).to_have_text("3")
    await expect(emails.locator("[data-limit=rate_limit]")).to_have_text("10 per 1m00s")
    await expect(emails.locator("[data-count=queued]")).to_have_text("1")
    await page.screenshot(path=str(shots / "ui-queues.png"), full_page=True)

    await page.goto(ui.url + "/schedules")
    row = page.locator('tr.schedule[data-schedule="nightly-report"]')
    await expect(row).to_have_attribute("data-paused", "false")
    assert await row.locator("button[data-action=pause]").is_disabled()
    pause_url = f"{ui.url}/schedules/actions/pause"
    refused = await page.request.post(pause_url, form={"name": "nightly-report"})
    assert refused.status == 403
    assert not (await ui.flow.get_schedule("nightly-report")).paused

    await log_in(page)
    csrf = await row.locator("input[name=csrf_token]").first.input_value()
    cross_site = await page.request.post(
        pause_url,
        form={"name": "nightly-report", "csrf_token": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert cross_site.status == 403
    assert not (await ui.flow.get_schedule("nightly-report")).paused

    await row.locator("button[data-action=pause]").click()
    await expect(page.locator("p.notice")).to_have_text("schedule 'nightly-report' paused")
    await expect(row).to_have_attribute("data-paused", "true")
    assert (await ui.flow.get_schedule("nightly-report")).paused
    await row.locator("button[data-action=resume]").click()
    await expect(row).to_have_attribute("data-paused", "false")
    assert not (await ui.flow.get_schedule("nightly-report")).paused

    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await row.locator("button[data-action=trigger]").click()
    await expect(page.locator("p.notice")).to_contain_text("triggered: run ")
    triggered = await ui.flow.list_runs(workflow="ui.report")
    assert len(triggered) == 1
    await page.screenshot(path=str(shots / "ui-schedules.png"), full_page=True)

    unknown = await page.request.post(
        pause_url, form={"name": "nope"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert unknown.status == 404 and "no schedule named" in (await unknown.json())["message"]
    assert problems == []
    await context.close()


async def test_fork_and_replay_from_the_run_page_and_lineage_links(
    ui: UI, browser: Any, shots: Path
) -> None:
    expect = playwright_api.expect
    ui.gate.set()
    run_id = await ui.flow.start("ui.pipeline", input=1)
    await ui.flow.result(run_id, timeout=10)
    context, page, problems = await new_page(browser)
    await page.goto(f"{ui.url}/runs/{run_id}")
    await log_in(page)

    form = page.locator("form[data-form=replay]")
    await form.locator("input[name=from_stage]").fill("wait_for_gate")
    await form.locator("textarea[name=config]").fill("{not json")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("p.notice.failed")).to_contain_text("configuration is not valid JSON")

    form = page.locator("form[data-form=replay]")
    await form.locator("input[name=from_stage]").fill("wait_for_gate")
    await form.locator("textarea[name=config]").fill('{"model": "v2"}')
    await form.locator("button[type=submit]").click()
    await expect(page.locator("p.notice")).to_have_text(
        f"replayed run {run_id} from stage 'wait_for_gate'"
    )
    await expect(page.locator("#run-status")).to_have_text("succeeded", timeout=10_000)
    replayed = (await ui.flow.list_runs(workflow="ui.pipeline", descending=True, limit=1)).runs[0]
    assert str(replayed.id) in page.url
    assert (await ui.flow.status(replayed.id)).replayed_from == run_id

    await page.click(f'a[href$="/runs/{run_id}"]')  # "replayed from" links back
    form = page.locator("form[data-form=fork]")
    await form.locator("input[name=from_step]").fill("no_such_step")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("p.notice.failed")).to_contain_text(
        "no step or state named 'no_such_step'"
    )
    form = page.locator("form[data-form=fork]")
    await form.locator("input[name=from_step]").fill("1")
    await form.locator("button[type=submit]").click()
    await expect(page.locator("p.notice")).to_have_text(f"forked from run {run_id} at step 1")
    await expect(page.locator("#run-status")).to_have_text("succeeded", timeout=10_000)

    await page.goto(f"{ui.url}/runs/{run_id}")
    key = page.locator("#section-artefacts a").first
    key_text = await key.inner_text()
    await key.click()
    await expect(page.locator("#lineage-key")).to_have_text(key_text)
    await expect(page.locator("#lineage-up tr.node")).to_have_count(1)
    await page.screenshot(path=str(shots / "ui-lineage.png"), full_page=True)
    missing = await page.goto(f"{ui.url}/lineage?key=executions/none.json")
    assert missing is not None and missing.status == 404
    await expect(page.locator("p.error")).to_contain_text("no artefact stored under")
    assert [p for p in problems if "status of 404" not in p] == []
    await context.close()


async def test_a_failed_run_shows_its_error_and_traceback_as_text(ui: UI, browser: Any) -> None:
    expect = playwright_api.expect
    run_id = await ui.flow.start("ui.broken", input=7)
    with pytest.raises(WorkflowFailed):
        await ui.flow.result(run_id, timeout=10)
    context, page, problems = await new_page(browser)

    await page.goto(f"{ui.url}/?status=failed")  # the list shows the error, as text
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    await expect(row.locator(".error-cell")).to_contain_text(f"cannot take 7: {HOSTILE}")

    await page.click(f'a[href$="/runs/{run_id}"]')
    await expect(page.locator("#run-status")).to_have_text("failed")
    error = page.locator("#run-error")
    await expect(error).to_contain_text("StepFailed")
    await expect(error).to_contain_text(f"ValueError: cannot take 7: {HOSTILE}")
    assert await page.locator("#run-output").count() == 0  # a failed run has no output
    failed_step = page.locator('#steps tr.step.failed[data-step="explode"]')
    await expect(failed_step.locator(".error")).to_contain_text(f"cannot take 7: {HOSTILE}")

    # The traceback is folded away until asked for, then shown as text.
    traceback = page.locator("#run-error ~ details pre.traceback")
    await expect(traceback).to_be_hidden()
    await page.locator("#run-error ~ details summary").click()
    await expect(traceback).to_be_visible()
    await expect(traceback).to_contain_text("Traceback (most recent call last)")
    await expect(traceback).to_contain_text('raise ValueError(f"cannot take {n}: {HOSTILE}")')
    await expect(traceback).to_contain_text(f"ValueError: cannot take 7: {HOSTILE}")

    # The hostile message made no element anywhere, and nothing ran.
    assert await page.locator("#run-body script, #run-body img").count() == 0
    assert await page.evaluate("window.__pwned") is None
    await page.goto(f"{ui.url}/?status=failed")
    await expect(row).to_have_count(1)
    assert await page.locator("#runs-body script, #runs-body img").count() == 0
    assert await page.evaluate("window.__pwned") is None
    assert problems == []
    await context.close()


async def filter_runs(page: Any, url: str, **fields: str) -> set[str]:
    """Fill the runs page's filter form as a user would, submit it; the run ids shown."""
    await page.goto(url + "/")
    form = page.locator("form.filters")
    for name, value in fields.items():
        field = form.locator(f"[name={name}]")
        if name in ("status", "since"):
            await field.select_option(value)
        else:
            await field.fill(value)
    async with page.expect_navigation():
        await form.locator("button[type=submit]").click()
    for name, value in fields.items():  # the page keeps what it was asked for
        await playwright_api.expect(form.locator(f"[name={name}]")).to_have_value(value)
    return {await row.get_attribute("data-run-id") for row in await page.locator("tr.run").all()}


async def test_the_runs_filters_narrow_what_the_page_shows(
    ui: UI, browser: Any, db: asyncpg.Connection
) -> None:
    expect = playwright_api.expect
    recent = await ui.flow.start("user.onboarding", input=1)
    old = await ui.flow.start("user.onboarding", input=2)
    broken = await ui.flow.start("ui.broken", input=3)
    elsewhere = await ui.flow.start("ui.pipeline", input=4, queue="emails")  # nobody serves it
    running = await ui.flow.start("ui.pipeline", input=5)
    for run_id in (recent, old):
        await ui.flow.result(run_id, timeout=10)
    with pytest.raises(WorkflowFailed):
        await ui.flow.result(broken, timeout=10)
    await db.execute(  # as if it had been started two hours ago
        "UPDATE durableflow.runs SET created_at = created_at - interval '2 hours' WHERE id = $1",
        old,
    )
    await eventually(lambda: ui.flow.count_runs(status="running"), "the pipeline waits at its gate")
    recent, old, broken, elsewhere, running = map(str, (recent, old, broken, elsewhere, running))
    context, page, problems = await new_page(browser)

    assert await filter_runs(page, ui.url) == {recent, old, broken, elsewhere, running}
    assert await filter_runs(page, ui.url, status="failed") == {broken}
    assert await filter_runs(page, ui.url, workflow="user.onboarding") == {recent, old}
    assert await filter_runs(page, ui.url, queue="emails") == {elsewhere}
    assert await filter_runs(page, ui.url, since="1h") == {recent, broken, elsewhere, running}
    assert await filter_runs(page, ui.url, q=running) == {running}
    assert await filter_runs(
        page, ui.url, status="succeeded", workflow="user.onboarding", since="1h"
    ) == {recent}
    assert await filter_runs(page, ui.url, workflow="no.such.workflow") == set()
    await expect(page.locator("#runs-body")).to_contain_text("no runs match")

    # A filtered page stays filtered as it updates live: the run that finishes leaves it.
    assert await filter_runs(page, ui.url, status="running") == {running}
    ui.gate.set()
    await expect(page.locator("tr.run")).to_have_count(0, timeout=10_000)
    await expect(page.locator("#runs-body")).to_contain_text("no runs match")
    assert problems == []
    await context.close()


async def test_older_runs_are_paged_with_the_filters_kept(ui: UI, browser: Any) -> None:
    expect = playwright_api.expect
    await ui.flow.start("user.onboarding", input=1)  # older, on another queue: never listed
    queued = [await ui.flow.start("ui.pipeline", input=n, queue="emails") for n in range(51)]
    context, page, problems = await new_page(browser)

    newest = await filter_runs(page, ui.url, queue="emails")
    assert newest == {str(run_id) for run_id in queued[1:]}  # a page holds 50
    async with page.expect_navigation():
        await page.click("tr.more a")
    await expect(page.locator("input[name=queue]")).to_have_value("emails")
    rows = page.locator("tr.run")
    await expect(rows).to_have_count(1)
    assert await rows.get_attribute("data-run-id") == str(queued[0])
    assert await page.locator("tr.more").count() == 0  # the last page
    assert problems == []
    await context.close()
