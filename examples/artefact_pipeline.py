"""An ingestion pipeline whose stages are artefacts, replayed from storage.

fetch -> convert -> summarise: each stage's output is written to storage with a
sidecar (provenance, config hash, lineage) before its checkpoint commits. The script
runs the pipeline once with model "v1", then replays it from ``convert`` with model
"v2": ``fetch`` does not run again, its output is read back from storage, and the new
artefacts' lineage leads back to the first run's fetch artefact. Finally it prunes both
runs. Run it with::

    DURABLEFLOW_DATABASE_URL=postgresql://app@127.0.0.1/app \
    DURABLEFLOW_STORAGE_URL=file:///tmp/durableflow-artefacts \
        python -m examples.artefact_pipeline

(without ``DURABLEFLOW_DATABASE_URL`` it uses an embedded Postgres; without
``DURABLEFLOW_STORAGE_URL`` artefacts go to ``.durableflow/artefacts``; an
``s3://bucket/prefix`` URL works the same way). Workers can equally be CLI processes:
``durableflow worker examples.artefact_pipeline:flow``, and the replay
``durableflow runs replay RUN_ID --from-stage convert --config '{"model": "v2"}'``.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from durableflow import Flow, FlowContext

flow = Flow()  # settings from DURABLEFLOW_* variables


class Page(BaseModel):
    url: str
    html: str


class Doc(BaseModel):
    url: str
    paragraphs: list[str]
    model: str


class Summary(BaseModel):
    url: str
    sentences: int
    model: str


class PipelineConfig(BaseModel):
    model: str
    max_paragraphs: int = 10


@flow.step(artefact=True, retries=3)
async def fetch(ctx: FlowContext, url: str) -> Page:
    await asyncio.sleep(0.2)  # an HTTP request
    ctx.annotate(status_code=200)
    return Page(url=url, html="<p>One. Two.</p><p>Three.</p><p>Four. Five. Six.</p>")


@flow.step(artefact=True)
async def convert(ctx: FlowContext, page: Page) -> Doc:
    config = PipelineConfig.model_validate(ctx.config)
    paragraphs = [p.removesuffix("</p>") for p in page.html.split("<p>") if p]
    return Doc(url=page.url, paragraphs=paragraphs[: config.max_paragraphs], model=config.model)


@flow.step(artefact=True)
async def summarise(ctx: FlowContext, doc: Doc) -> Summary:
    text = " ".join(doc.paragraphs)
    await ctx.write_artefact("summary.txt", text.encode(), content_type="text/plain")
    return Summary(url=doc.url, sentences=text.count("."), model=doc.model)


@flow.workflow(name="ingest", version=1)
async def ingest(ctx: FlowContext, url: str) -> Summary:
    page = await fetch(ctx, url)
    doc = await convert(ctx, page)
    return await summarise(ctx, doc)


async def main() -> None:
    await flow.migrate()
    async with flow, flow.worker():
        first = await flow.start(
            ingest, input="https://example.org/post", config=PipelineConfig(model="v1")
        )
        print("first run:", await flow.result(first, timeout=60))

        second = await flow.replay(first, from_stage="convert", config={"model": "v2"})
        print("replayed :", await flow.result(second, timeout=60))

        summary_key = (await flow.steps(second))[-1].artefact_key
        assert summary_key is not None
        print(f"lineage of {summary_key}:")
        for node in await flow.lineage(summary_key):
            indent = "  " * (node.depth + 1)
            print(f"{indent}{node.name} (run {node.run_id}, config {node.config_hash})")

        async for event in flow.watch(second):
            if event.kind == "status_changed":
                print("replay status:", event.status)

        for run_id in (second, first):  # a replay first: its source is read by it
            result = await flow.prune(run_id)
            print(f"pruned {run_id}: {result.artefacts} artefacts, rows {result.rows}")


if __name__ == "__main__":
    asyncio.run(main())
