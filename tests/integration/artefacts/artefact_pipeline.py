"""A three-stage pipeline (fetch -> convert -> summarise) whose stages are artefacts.

Each stage records its execution in ``ledger`` (a list owned by the test, outside
durableflow), so a test can tell a stage that ran from one republished by a replay.
"""

from __future__ import annotations

from typing import Any

import pydantic

from durableflow import Flow, FlowContext

WORKFLOW = "ingest"


class Page(pydantic.BaseModel):
    url: str
    text: str


class Doc(pydantic.BaseModel):
    url: str
    words: list[str]
    model: str


class Summary(pydantic.BaseModel):
    url: str
    kept: int
    model: str


def build_pipeline(
    database_url: str, storage: Any, ledger: list[tuple[str, str]], **settings: Any
) -> Flow:
    flow = Flow(database_url=database_url, storage=storage, poll_interval=0.1, **settings)

    @flow.step(artefact=True)
    async def fetch(ctx: FlowContext, url: str) -> Page:
        ledger.append(("fetch", str(ctx.run_id)))
        ctx.annotate(source="unit-test", status_code=200)
        return Page(url=url, text=" ".join(f"word{i}" for i in range(12)))

    @flow.step(artefact=True)
    async def convert(ctx: FlowContext, page: Page) -> Doc:
        ledger.append(("convert", str(ctx.run_id)))
        return Doc(url=page.url, words=page.text.split(), model=ctx.config["model"])

    @flow.step(artefact=True)
    async def summarise(ctx: FlowContext, doc: Doc) -> Summary:
        ledger.append(("summarise", str(ctx.run_id)))
        kept = [w for w in doc.words if len(w) > ctx.config["min_length"]]
        return Summary(url=doc.url, kept=len(kept), model=doc.model)

    @flow.workflow(name=WORKFLOW, version=1)
    async def ingest(ctx: FlowContext, url: str) -> Summary:
        page = await fetch(ctx, url)
        doc = await convert(ctx, page)
        return await summarise(ctx, doc)

    return flow
