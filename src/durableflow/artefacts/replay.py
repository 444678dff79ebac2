"""Runs made from other runs: replay from storage, and fork from the database.

**Replay** (``flow.replay(run_id, from_stage=...)``) starts a new run of the same
workflow version whose steps before the first execution of ``from_stage`` return the
outputs republished from storage. Before anything is written, a pre-flight check
reads each of those artefacts, compares its sidecar's sha256 with the one its
checkpoint recorded and the bytes with the sidecar (``StorageIntegrityError``
otherwise); a missing or corrupt artefact is a ``ReplayError`` naming its key, and no
run is started. The new run is then inserted together with its seeded history in one
transaction: each republished checkpoint carries the bytes read back from storage
(inline when at most ``inline_max_bytes``; larger ones are read again, and checked
again, when a worker loads the history) and the key and sha256 of the artefact they
came from, so the lineage of what the new run computes points at those artefacts.

**Fork** (``flow.fork(run_id, from_step=...)``) copies the checkpoints before
``from_step`` from the database as they are (DBOS's fork): no storage involved. A step
id past the run's last checkpoint + 1 is refused: it would copy everything while
claiming to start from a step the run never reached.

Both are made only from a run whose history is settled: finished (succeeded, failed,
cancelled, dead) or blocked. A queued, running or waiting run is still adding
checkpoints, so a copy of it would be a moment's snapshot nobody asked for;
``RunActionRefused`` says so and nothing is started.

A stage is named as its checkpoints are (a step's name, a graph state's ``state:<name>``)
or, for a graph run, by the state's plain name: ``from_stage="review"`` finds the first
execution of state ``review``'s handler, recorded as ``state:review``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any
from uuid import UUID

from durableflow._store.artefacts import ArtefactStore, DerivedRun, SourceStep
from durableflow._store.records import FINAL_STATUSES
from durableflow.artefacts.values import config_to_json, name_argument
from durableflow.engine.graphs import STATE_KIND, STATE_STEP_PREFIX, state_step_name
from durableflow.engine.ids import uuid7
from durableflow.errors import (
    ArtefactNotFound,
    InvalidFieldValue,
    ReplayError,
    RunActionRefused,
    RunNotFound,
    StorageIntegrityError,
)
from durableflow.storage import StorageProtocol

DATA_KINDS = frozenset({"step", "state"})
"""Checkpoint kinds whose output is data a replay republishes from storage.

Other kinds (sleeps, signal waits, events, transitions) record control flow, not
results; a replay copies them from the database as they are.
"""

PREFLIGHT_CONCURRENCY = 8

SETTLED_STATUSES = FINAL_STATUSES | {"blocked"}
"""Statuses of a run whose history no worker is adding to: what replay and fork copy."""

STAGES_LISTED = 30
"""How many of a run's stage names the error for an unknown stage lists."""


def _derived_from(source: Any, **changes: Any) -> DerivedRun:
    run = DerivedRun(
        id=uuid7(),
        workflow=source["workflow"],
        version=source["version"],
        code_hash=source["code_hash"],
        input=source["input"],
        config=source["config"],
        config_hash=source["config_hash"],
        queue=source["queue"],
        priority=source["priority"],
        correlation_id=source["correlation_id"],
        replayed_from=None,
        forked_from=None,
    )
    return replace(run, **changes)


async def _source(sql: ArtefactStore, run_id: UUID, action: str) -> Any:
    """The run to ``action`` (replay, fork), or why not: unknown, or not settled yet."""
    source = await sql.source_run(run_id)
    if source is None:
        raise RunNotFound(run_id)
    if source["status"] not in SETTLED_STATUSES:
        raise RunActionRefused(
            run_id,
            action=action,
            status=source["status"],
            reason="only a finished or blocked run can be replayed or forked, as its "
            "history is still growing; wait for it to finish (flow.result) or cancel it",
        )
    return source


async def _first_execution(sql: ArtefactStore, run_id: UUID, name: str) -> int | None:
    """The step id of the first execution of the step or graph state ``name``."""
    return await sql.first_step_named(run_id, name, state_step_name(name))


async def _stages_that_ran(sql: ArtefactStore, run_id: UUID) -> str:
    """The run's step and state names, for an error naming a stage that never ran."""
    names = [
        name.removeprefix(STATE_STEP_PREFIX) if kind == STATE_KIND else name
        for name, kind in await sql.stage_names(run_id, STAGES_LISTED + 1)
    ]
    if not names:
        return "no step or state of it has a checkpoint yet"
    listed = ", ".join(repr(name) for name in names[:STAGES_LISTED])
    return f"the steps and states that ran: {listed}" + (
        ", ..." if len(names) > STAGES_LISTED else ""
    )


async def replay(
    sql: ArtefactStore,
    storage: StorageProtocol,
    run_id: UUID,
    *,
    from_stage: str,
    config: Any,
    inline_max_bytes: int,
) -> UUID:
    """Pre-flight, then start the replay; returns the new run's id."""
    name_argument(from_stage, "from_stage")
    source = await _source(sql, run_id, "replay")
    config_json, config_hash = (
        config_to_json(config) if config is not None else (source["config"], source["config_hash"])
    )
    first = await _first_execution(sql, run_id, from_stage)
    if first is None:
        raise ReplayError(
            run_id,
            f"no step or state named {from_stage!r} ran in it; "
            f"{await _stages_that_ran(sql, run_id)}",
        )
    steps = await sql.source_steps(run_id, first)
    seeded = await _preflight(run_id, storage, steps, inline_max_bytes)
    new_run = _derived_from(
        source, config=config_json, config_hash=config_hash, replayed_from=run_id
    )
    await sql.insert_replay(new_run, seeded)
    return new_run.id


async def _preflight(
    run_id: UUID, storage: StorageProtocol, steps: list[SourceStep], inline_max_bytes: int
) -> list[SourceStep]:
    """Every republished step read back from storage and verified, or ``ReplayError``."""
    for step in steps:
        if step.kind in DATA_KINDS and step.error is None and step.artefact_key is None:
            raise ReplayError(
                run_id,
                f"step {step.name!r} (#{step.step_id}) wrote no artefact, so its output "
                "cannot be republished from storage; declare it @flow.step(artefact=True) "
                "(or Flow(artefacts='all')) for future runs, or use flow.fork to copy the "
                "database's checkpoints",
                step=step.name,
            )
    limit = asyncio.Semaphore(PREFLIGHT_CONCURRENCY)

    async def verified(step: SourceStep) -> SourceStep:
        if step.kind not in DATA_KINDS or step.error is not None or step.artefact_key is None:
            return step
        key = step.artefact_key
        async with limit:
            try:
                output = await _read_verified(storage, step, key, inline_max_bytes)
            except ArtefactNotFound as exc:
                raise ReplayError(
                    run_id, "the artefact is missing from storage", key=key, step=step.name
                ) from exc
            except StorageIntegrityError as exc:
                raise ReplayError(run_id, exc.reason, key=key, step=step.name) from exc
        return replace(step, output=output)

    return list(await asyncio.gather(*(verified(step) for step in steps)))


async def _read_verified(
    storage: StorageProtocol, step: SourceStep, key: str, inline_max_bytes: int
) -> str | None:
    """The output's JSON when small enough to seed inline, else None (checked by streaming)."""
    metadata = await storage.read_metadata(key)
    if step.artefact_sha256 and metadata.sha256 != step.artefact_sha256:
        raise StorageIntegrityError(
            key,
            f"its sidecar records sha256 {metadata.sha256} but the checkpoint of step "
            f"{step.name!r} recorded {step.artefact_sha256}: it was overwritten after the run",
        )
    if metadata.size is not None and metadata.size <= inline_max_bytes:
        return (await storage.read(key)).decode("utf-8")
    # Too large to keep in Postgres: check every byte now without holding them; the
    # worker reads (and checks) them again when it loads the new run's history.
    async for _ in storage.read_stream(key):
        pass
    return None


async def fork(sql: ArtefactStore, run_id: UUID, *, from_step: int | str) -> UUID:
    """Start a fork that continues from ``from_step``; returns the new run's id."""
    if isinstance(from_step, str):
        name_argument(from_step, "from_step")
    elif not isinstance(from_step, int) or isinstance(from_step, bool) or from_step < 0:
        raise InvalidFieldValue(
            "from_step", f"{from_step!r} is neither a step id (an int >= 0) nor a step name"
        )
    source = await _source(sql, run_id, "fork")
    if isinstance(from_step, str):
        found = await _first_execution(sql, run_id, from_step)
        if found is None:
            raise InvalidFieldValue(
                "from_step",
                f"no step or state named {from_step!r} ran in run {run_id} (give one of "
                f"its names, or a step id); {await _stages_that_ran(sql, run_id)}",
            )
        before = found
    else:
        before = _step_in_history(run_id, from_step, source["last_step_id"])
    new_run = _derived_from(source, forked_from=run_id)
    await sql.insert_fork(new_run, run_id, before)
    return new_run.id


def _step_in_history(run_id: UUID, from_step: int, last_step_id: int | None) -> int:
    """``from_step`` if a fork can continue from it: a recorded step, or the one after the last.

    Checked here, before any SQL, also because a step id past the int4 column's range
    would otherwise reach Postgres as an overflow.
    """
    after_last = 0 if last_step_id is None else last_step_id + 1
    if from_step > after_last:
        history = (
            "it has no checkpoint, so a fork of it starts from step 0"
            if last_step_id is None
            else f"its checkpoints are steps 0..{last_step_id}, so a fork of it starts from "
            f"one of them or from {after_last} (everything copied)"
        )
        raise InvalidFieldValue(
            "from_step", f"step {from_step} is past the history of run {run_id}: {history}"
        )
    return from_step
