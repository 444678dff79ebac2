"""What a Flow knows: its workflow and step definitions, by name and version."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from durableflow.engine.serialization import Codec
from durableflow.errors import ConfigurationError, WorkflowNotFound

if TYPE_CHECKING:
    from durableflow._store.records import Checkpoint

AsyncFunction = Callable[..., Awaitable[Any]]
OutputHook = Callable[[Any, Any, str], "tuple[Checkpoint, ...]"]


def _annotations(fn: AsyncFunction) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolved forward references: fall back to "anything JSON"
        return {}


@dataclass(frozen=True)
class StepDefinition:
    """A function decorated with ``@flow.step``: its policy and its output type."""

    name: str
    fn: AsyncFunction
    retries: int = 0
    backoff: float = 0.5
    max_backoff: float = 60.0
    timeout: float | None = None
    output_type: Any = Any
    artefact: bool = False  # output also written to storage before the checkpoint (#12)
    # -- graphs: a graph state's handler is a step of kind "state" whose transition is
    # written with its checkpoint: ``on_output(ctx, value, output_json)`` returns the
    # checkpoints to write in the same statement (see engine/graphs.py).
    kind: str = "step"
    on_output: OutputHook | None = None

    @classmethod
    def from_function(
        cls,
        fn: AsyncFunction,
        *,
        name: str | None,
        retries: int,
        backoff: float,
        max_backoff: float,
        timeout: float | None,
        artefact: bool = False,
    ) -> StepDefinition:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"@flow.step needs an async function; {fn.__qualname__} is not one"
            )
        if retries < 0 or backoff < 0 or (timeout is not None and timeout <= 0):
            raise ConfigurationError(
                f"step {fn.__qualname__}: retries and backoff must be >= 0 and timeout > 0"
            )
        hints = _annotations(fn)
        return cls(
            name=name or fn.__name__,
            fn=fn,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            timeout=timeout,
            output_type=hints.get("return", Any),
            artefact=artefact,
        )


@dataclass
class WorkflowDefinition:
    """A function decorated with ``@flow.workflow``: ``fn(ctx, input) -> output``."""

    name: str
    version: int
    fn: AsyncFunction
    input_type: Any = Any
    output_type: Any = Any
    takes_input: bool = True
    kind: str = "workflow"
    code_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_function(cls, fn: AsyncFunction, *, name: str, version: int) -> WorkflowDefinition:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"@flow.workflow needs an async function; {fn.__qualname__} is not one"
            )
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigurationError(f"workflow {name!r}: version must be an integer >= 1")
        if not name or len(name) > 200:
            raise ConfigurationError("workflow name must be 1 to 200 characters")
        params = list(inspect.signature(fn).parameters.values())
        if not params or len(params) > 2:
            raise ConfigurationError(
                f"workflow {name!r} must take (ctx) or (ctx, input); it takes {len(params)} "
                "parameters"
            )
        hints = _annotations(fn)
        input_type = hints.get(params[1].name, Any) if len(params) == 2 else type(None)
        return cls(
            name=name,
            version=version,
            fn=fn,
            input_type=input_type,
            output_type=hints.get("return", Any),
            takes_input=len(params) == 2,
        )


class Registry:
    """Workflows by ``(name, version)`` and steps by name, for one ``Flow``."""

    def __init__(self) -> None:
        self._workflows: dict[tuple[str, int], WorkflowDefinition] = {}
        self._steps: dict[str, StepDefinition] = {}

    def add_workflow(self, definition: WorkflowDefinition) -> None:
        key = (definition.name, definition.version)
        existing = self._workflows.get(key)
        if existing is not None and existing.fn is not definition.fn:
            raise ConfigurationError(
                f"workflow {definition.name!r} version {definition.version} is registered "
                "twice; bump the version of the new one"
            )
        self._workflows[key] = definition

    def add_step(self, definition: StepDefinition) -> None:
        self._steps[definition.name] = definition

    def workflow(self, name: str, version: int | None = None) -> WorkflowDefinition:
        """The definition of ``name`` at ``version`` (default: the highest registered)."""
        if version is not None:
            found = self._workflows.get((name, version))
            if found is None:
                raise WorkflowNotFound(name, version=version, known=self.names())
            return found
        versions = [d for (n, _), d in self._workflows.items() if n == name]
        if not versions:
            raise WorkflowNotFound(name, known=self.names())
        return max(versions, key=lambda d: d.version)

    def definition_of(self, workflow: str | Any) -> WorkflowDefinition:
        """The definition of a workflow given by name (highest version) or by its function."""
        if isinstance(workflow, str):
            return self.workflow(workflow)
        definition = getattr(workflow, "__durableflow_workflow__", None)
        if not isinstance(definition, WorkflowDefinition):
            raise ConfigurationError(
                f"{workflow!r} is not a workflow: decorate it with @flow.workflow(...) or pass "
                "the workflow's name"
            )
        return self.workflow(definition.name, definition.version)

    def decode_output(
        self, workflow: str, version: int, output: str | None, *, max_bytes: int
    ) -> Any:
        """A run's recorded output, typed by its workflow's return annotation when that
        workflow is registered here, else as plain JSON."""
        if output is None:
            return None
        try:
            definition = self.workflow(workflow, version)
        except WorkflowNotFound:  # started elsewhere: plain JSON is the best we can do
            return json.loads(output)
        return Codec(
            definition.output_type,
            f"output of workflow {definition.name!r}",
            max_bytes=max_bytes,
        ).loads(output)

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._workflows})

    @property
    def workflows(self) -> list[WorkflowDefinition]:
        """Every registered workflow/graph definition, sorted by name then version."""
        return [self._workflows[key] for key in sorted(self._workflows)]

    @property
    def steps(self) -> dict[str, StepDefinition]:
        """Registered steps by name."""
        return dict(self._steps)

    def step_for_function(self, fn: object) -> StepDefinition | None:
        for definition in self._steps.values():
            if definition.fn is fn:
                return definition
        return None
