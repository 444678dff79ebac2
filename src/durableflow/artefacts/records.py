"""What the artefact API hands back: references, lineage nodes, prune counts, run events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID


@dataclass(frozen=True)
class ArtefactRef:
    """An artefact ``ctx.write_artefact`` stored: where, what it hashes to, its lineage id.

    Return it from a step (it is JSON) to pass the key on; a later step reads the bytes
    with ``await ctx.read_artefact(ref.key)``.
    """

    key: str
    sha256: str
    size: int
    lineage_id: str
    content_type: str | None = None


@dataclass(frozen=True)
class LineageNode:
    """One artefact in a lineage walk (``flow.lineage``).

    ``depth`` is its distance from the artefact the walk started at (0 for that one);
    ``inputs`` are the lineage ids of the artefacts it was made from.
    """

    id: UUID
    key: str
    run_id: UUID
    step_id: int
    name: str
    sha256: str
    size: int
    config_hash: str | None
    code_hash: str | None
    inputs: tuple[UUID, ...]
    created_at: datetime
    depth: int


@dataclass
class PruneResult:
    """What a prune removed: runs, storage objects, and rows per table.

    ``skipped`` lists the runs a bulk prune left alone because a replay or fork that
    has not finished still reads from them.
    """

    runs: int = 0
    artefacts: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[UUID] = field(default_factory=list)

    def add(self, other: PruneResult) -> None:
        """Fold ``other``'s counts into this one."""
        self.runs += other.runs
        self.artefacts += other.artefacts
        for table, count in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + count
        self.skipped.extend(other.skipped)


RunEventKind = Literal["status_changed", "step_finished", "artefact_written", "state_changed"]


@dataclass(frozen=True)
class RunEvent:
    """One thing that happened to a run, as ``flow.watch`` reports it.

    - ``status_changed``: ``status`` is the new status;
    - ``step_finished``: ``step_id``, ``name``, ``step_kind`` (``step``; graph states and
      waits record other kinds), ``failed``, and ``key`` when the step's output was
      written as an artefact;
    - ``artefact_written``: ``key``, ``step_id``, ``name`` (the step's, or the file's),
      ``sha256`` and ``size``;
    - ``state_changed`` (graph runs): ``state`` is the state the run entered,
      ``previous_state`` the one it left (None for the initial state, entered when the
      run starts).
    """

    kind: RunEventKind
    run_id: UUID
    at: datetime
    status: str | None = None
    step_id: int | None = None
    name: str | None = None
    key: str | None = None
    failed: bool = False
    sha256: str | None = None
    size: int | None = None
    step_kind: str | None = None
    state: str | None = None
    previous_state: str | None = None
