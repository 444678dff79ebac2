"""What a Flow knows: its workflow and step definitions, by name and version."""

from __future__ import annotations

import inspect
import json
import math
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
# A step body: ``async def`` (awaited on the event loop) or plain ``def`` (run in the
# loop's default thread pool, for code that blocks).
StepFunction = Callable[..., Any]
RetryPredicate = Callable[[BaseException], bool]

MAX_NAME_LENGTH = 200


def _where(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a function, to name it in errors."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def check_name(name: object, what: str) -> str:
    """A workflow or step name: 1 to 200 characters, no NUL, valid UTF-8."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"{what} name must be a string of 1 to {MAX_NAME_LENGTH} characters",
            setting="name",
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{what} name {name!r} is not valid UTF-8", setting="name"
        ) from None
    if "\x00" in name:
        raise ConfigurationError(f"{what} name {name!r} contains U+0000", setting="name")
    return name


def _positive_seconds(value: object, option: str, owner: str, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    valid = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
    if not valid:
        raise ConfigurationError(
            f"{owner}: {option} must be a finite number of seconds > 0, not {value!r}",
            setting=option,
        )


def _annotations(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolved forward references: fall back to "anything JSON"
        return {}


@dataclass(frozen=True)
class StepDefinition:
    """A function decorated with ``@flow.step``: its policy and its output type.

    ``is_async`` is False for a plain ``def`` body, which runs in a thread pool.
    ``should_retry`` decides, per exception, whether a failed attempt is retried.
    """

    name: str
    fn: StepFunction
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
    # -- graphs: a terminal state's handler ends the run: its checkpoint is written with
    # the run's outcome, in one statement (RunState.commit's ``with_outcome``).
    ends_run: bool = False
    is_async: bool = True
    should_retry: RetryPredicate | None = None

    @classmethod
    def from_function(
        cls,
        fn: StepFunction,
        *,
        name: str | None,
        retries: int,
        backoff: float,
        max_backoff: float,
        timeout: float | None,
        artefact: bool = False,
        should_retry: RetryPredicate | None = None,
        what: str = "step",
    ) -> StepDefinition:
        """The definition of step ``fn``; ``ConfigurationError`` naming the bad option
        (``setting``). ``what`` names the kind of step in messages."""
        where = _where(fn)
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise ConfigurationError(
                f"{what} {where} is a generator function; a step returns one value "
                "(return a list instead)"
            )
        if not callable(fn) or inspect.isclass(fn):
            raise ConfigurationError(f"a {what} needs a function; {fn!r} is not one")
        owner = f"{what} {where}"
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(
                f"{owner}: retries must be an integer >= 0, not {retries!r}", setting="retries"
            )
        _positive_seconds(backoff, "backoff", owner)
        _positive_seconds(max_backoff, "max_backoff", owner)
        _positive_seconds(timeout, "timeout", owner, optional=True)
        if should_retry is not None and not callable(should_retry):
            raise ConfigurationError(
                f"{owner}: should_retry must be a function of the exception",
                setting="should_retry",
            )
        hints = _annotations(fn)
        return cls(
            name=check_name(name or fn.__name__, what),
            fn=fn,
            retries=retries,
            backoff=float(backoff),
            max_backoff=float(max_backoff),
            timeout=None if timeout is None else float(timeout),
            output_type=hints.get("return", Any),
            artefact=artefact,
            is_async=inspect.iscoroutinefunction(fn),
            should_retry=should_retry,
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
    # Recoveries (takeovers from silent workers, releases after infrastructure errors)
    # after which a run is stopped as 'dead'; None: the setting's default.
    max_recoveries: int | None = None

    @classmethod
    def from_function(
        cls, fn: AsyncFunction, *, name: str, version: int, max_recoveries: int | None = None
    ) -> WorkflowDefinition:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"@flow.workflow needs an async function; {fn.__qualname__} is not one"
            )
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigurationError(f"workflow {name!r}: version must be an integer >= 1")
        check_name(name, "workflow")
        if max_recoveries is not None and (
            not isinstance(max_recoveries, int)
            or isinstance(max_recoveries, bool)
            or max_recoveries < 0
        ):
            raise ConfigurationError(
                f"workflow {name!r}: max_recoveries must be an integer >= 0, not {max_recoveries!r}"
            )
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
            max_recoveries=max_recoveries,
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
                f"twice, by {_where(existing.fn)} and by {_where(definition.fn)}; bump the "
                "version of the new one, or give it another name"
            )
        self._workflows[key] = definition

    def add_step(self, definition: StepDefinition) -> None:
        existing = self._steps.get(definition.name)
        if existing is not None and existing.fn is not definition.fn:
            raise ConfigurationError(
                f"step name {definition.name!r} is registered twice, by {_where(existing.fn)} "
                f"and by {_where(definition.fn)}; give one of them another name "
                "(@flow.step(name=...)): replay finds steps by name"
            )
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
