"""Step outputs as artefacts: sidecars, lineage, config hashes, replay, fork, prune.

A step declared ``@flow.step(artefact=True)`` (or every step, with
``Flow(artefacts="all")``) writes its output through the Flow's storage, with a JSON
sidecar carrying provenance, the run's config hash and the lineage ids of its inputs,
before its checkpoint commits. ``flow.replay`` republishes those outputs from storage
into a new run; ``flow.fork`` copies checkpoints from the database; ``flow.prune``
removes finished runs, storage first. See ``docs/storage.md``.

Modules: ``run`` (what a step does while a run executes), ``service`` (a Flow's
storage and statements), ``replay`` (replay and fork), ``prune`` (prune and
retention), ``watch``, ``values`` (checking configs, custom fields and names),
``naming`` (keys and lineage ids), ``records`` (what the API returns).
"""

from durableflow.artefacts.records import ArtefactRef, LineageNode, PruneResult, RunEvent

__all__ = ["ArtefactRef", "LineageNode", "PruneResult", "RunEvent"]
