"""Artefacts: ``replay``, ``fork``, ``prune``, ``lineage``, retention and ``watch``.

The work is done in ``durableflow.artefacts``; these methods check arguments, connect,
and hand over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from durableflow.admin import RunSection, SectionContent, SectionLink, register_run_section
from durableflow.artefacts import prune as pruning
from durableflow.artefacts import replay as replays
from durableflow.artefacts.naming import lineage_id_for
from durableflow.artefacts.prune import PruneProgress
from durableflow.artefacts.records import LineageNode, PruneResult, RunEvent
from durableflow.artefacts.values import name_argument
from durableflow.artefacts.watch import watch_run
from durableflow.errors import ArtefactNotFound, InvalidFieldValue
from durableflow.storage import StorageProtocol, validate_key
from durableflow.surfaces.base import FlowCore, as_run_id

if TYPE_CHECKING:
    from durableflow.admin import RunDetail
    from durableflow.artefacts.service import ArtefactService

FINISHED = ("succeeded", "failed", "cancelled", "dead")


class ArtefactsSurface(FlowCore):
    """``Flow``'s methods for artefacts, lineage, replay from storage, fork and prune."""

    _artefact_service: ArtefactService

    @property
    def storage(self) -> StorageProtocol:
        """The storage artefacts go to (``Flow(storage=...)`` / ``DURABLEFLOW_STORAGE_URL``).

        Built on first use; a provider passed to ``Flow(storage=...)`` is used as is.
        """
        return self._artefact_service.storage

    async def _artefacts(self) -> ArtefactService:
        store = await self._connected()
        self._artefact_service.attach(store)
        return self._artefact_service

    async def _close_artefacts(self) -> None:
        await self._artefact_service.close()

    async def replay(self, run_id: UUID | str, *, from_stage: str, config: Any = None) -> UUID:
        """Start a new run whose stages before ``from_stage`` are republished from storage.

        Every step before the first execution of ``from_stage`` returns the output read
        back from its artefact (sha256-verified), without running; ``from_stage`` and
        everything after it run anew, with ``config`` when given (else the original
        run's). ``from_stage`` is a step's name or, for a graph run, a state's
        (``"review"``, or its record's name ``"state:review"``). Raises ``ReplayError``
        naming the key, and starts nothing, when an artefact is missing or corrupt, and
        listing the stages that ran when ``from_stage`` did not. The new run records
        ``replayed_from``.

        Example::

            new_id = await flow.replay(run_id, from_stage="convert", config={"model": "v2"})
            summary = await flow.result(new_id)
        """
        service = await self._artefacts()
        return await replays.replay(
            service.sql,
            service.storage,
            as_run_id(run_id),
            from_stage=from_stage,
            config=config,
            inline_max_bytes=self.settings.inline_max_bytes,
        )

    async def fork(self, run_id: UUID | str, *, from_step: int | str) -> UUID:
        """Start a new run with the checkpoints before ``from_step`` copied from the database.

        ``from_step`` is a step id, or a step name (its first execution): for a graph
        run, a state's name or its record's (``"review"``, ``"state:review"``). The new
        run continues from there with the original input and configuration and records
        ``forked_from``.
        """
        service = await self._artefacts()
        return await replays.fork(service.sql, as_run_id(run_id), from_step=from_step)

    async def prune(
        self,
        run_id: UUID | str | None = None,
        *,
        before: datetime | None = None,
        workflow: str | None = None,
        status: Sequence[str] = FINISHED,
        progress: PruneProgress | None = None,
    ) -> PruneResult:
        """Delete finished runs: their artefacts, then lineage, then their rows.

        ``prune(run_id)`` prunes one run (``PruneRefused`` if it has not finished or a
        replay/fork made from it is still running; a run already pruned counts zero).
        ``prune(before=..., workflow=None, status=...)`` prunes every finished run older
        than ``before``, a batch of runs at a time. Idempotent and resumable: a prune
        that stopped half-way is finished by the next one. Returns what was removed.

        ``progress(done, total)``, for a prune by age, is called before the first run
        and after each run removed or skipped: ``done`` is the running ``PruneResult``
        (updated in place), ``total`` the runs there were to prune when it began (one
        count query first, whose cost grows with that number). A plain function, called
        on the event loop: keep it quick. Example::

            def report(done: PruneResult, total: int) -> None:
                print(f"{done.runs + len(done.skipped)} of {total} runs done")

            await flow.prune(before=datetime.now(UTC) - timedelta(days=30), progress=report)
        """
        service = await self._artefacts()
        pruner = pruning.Pruner(service.sql, service.storage)
        if run_id is not None:
            if before is not None or workflow is not None or progress is not None:
                raise InvalidFieldValue(
                    "run_id",
                    "prune one run by id, or many by before=/workflow= (with progress=), not both",
                )
            return await pruner.prune_run(as_run_id(run_id))
        if before is None:
            raise InvalidFieldValue("before", "give a run id, or before= to prune by age")
        cutoff, statuses = pruning.check_prune_filters(before, status)
        if workflow is not None:
            name_argument(workflow, "workflow")
        if progress is not None and not callable(progress):
            raise InvalidFieldValue("progress", "give a function progress(done, total), or None")
        return await pruner.prune_finished(
            cutoff, workflow=workflow, statuses=statuses, progress=progress
        )

    async def configure_retention(
        self, keep: timedelta | None, *, workflow: str | None = None
    ) -> None:
        """Keep finished runs of ``workflow`` (None: every workflow without its own
        policy) for ``keep``; ``keep=None`` removes the policy.

        Policies are applied by ``apply_retention()``.
        """
        name, seconds = pruning.check_retention(keep, workflow)
        service = await self._artefacts()
        await service.sql.set_retention(name, seconds)

    async def apply_retention(self) -> PruneResult:
        """Prune every finished run older than its retention policy allows.

        Idempotent and safe to run from several processes at once. It is the leader's
        retention duty; until a leader runs it, call it yourself (e.g. hourly).
        """
        return await pruning.apply_retention(await self._artefacts())

    async def lineage(
        self,
        key: str,
        direction: Literal["up", "down"] = "up",
        depth: int | None = None,
    ) -> list[LineageNode]:
        """The artefact under ``key`` and what it was made from (``up``) or what was made
        from it (``down``), nearest first, ``depth`` levels (None: all).

        ``ArtefactNotFound`` when no lineage is recorded for ``key``.
        """
        validate_key(key)
        if direction not in ("up", "down"):
            raise InvalidFieldValue("direction", f"{direction!r}: use 'up' or 'down'")
        if depth is not None and (
            not isinstance(depth, int) or isinstance(depth, bool) or depth < 0
        ):
            raise InvalidFieldValue("depth", f"{depth!r}: give an int >= 0, or None for all")
        service = await self._artefacts()
        rows = await service.sql.walk_lineage(
            lineage_id_for(key), up=direction == "up", depth=depth
        )
        if not rows:
            raise ArtefactNotFound(key)
        return [_lineage_node(row) for row in rows]

    async def list_artefacts(self, run_id: UUID | str) -> list[LineageNode]:
        """The artefacts a run wrote (outputs and files), in step order (``depth`` 0)."""
        service = await self._artefacts()
        return [_lineage_node(row) for row in await service.sql.run_artefacts(as_run_id(run_id))]

    async def watch(
        self, run_id: UUID | str, *, poll_interval: float = 0.25
    ) -> AsyncIterator[RunEvent]:
        """The run's events as they happen: ``status_changed``, ``step_finished``,
        ``artefact_written``, and for a graph run ``state_changed`` (``state`` entered,
        ``previous_state`` left); ends after the run's final status.

        Example::

            async for event in flow.watch(run_id):
                print(event.kind, event.name or event.status)
        """
        if not poll_interval > 0:
            raise InvalidFieldValue("poll_interval", "give a number of seconds > 0")
        service = await self._artefacts()
        async for event in watch_run(
            service.sql,
            as_run_id(run_id),
            poll_interval=poll_interval,
            initial_state=self._graph_initial,
        ):
            yield event


def _lineage_node(row: Any) -> LineageNode:
    return LineageNode(
        id=row["id"],
        key=row["key"],
        run_id=row["run_id"],
        step_id=row["step_id"],
        name=row["name"],
        sha256=row["sha256"],
        size=row["size"],
        config_hash=row["config_hash"],
        code_hash=row["code_hash"],
        inputs=tuple(row["inputs"]),
        created_at=row["created_at"],
        depth=row["depth"],
    )


async def _artefacts_section(flow: Any, run: RunDetail) -> SectionContent | None:
    """The run page's "Artefacts" section (``runs show`` and the web UI)."""
    nodes = await flow.list_artefacts(run.id)
    status = await flow.status(run.id)
    origins = [
        f"{label} {source}"
        for label, source in (
            ("replayed from", status.replayed_from),
            ("forked from", status.forked_from),
        )
        if source is not None
    ]
    if not nodes and not origins:
        return None
    caption = "; ".join([*origins, f"config hash {status.config_hash or '-'}"])
    return SectionContent.table(
        ["step", "name", "key", "sha256", "size", "inputs"],
        [
            [
                node.step_id,
                node.name,
                SectionLink.lineage(node.key),  # the UI links it to the lineage page
                node.sha256[:16],
                node.size,
                len(node.inputs),
            ]
            for node in nodes
        ],
        caption=caption,
    )


register_run_section(RunSection("artefacts", "Artefacts", _artefacts_section, order=40))
