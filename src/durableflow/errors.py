"""Every exception durableflow raises, in one tree.

::

    DurableFlowError                 base of everything below; catch this to catch us all
    ├── ConfigurationError           a setting, name or duration is missing or malformed (schema
    │                                name, URL, session, queue, signal name, sleep seconds)
    ├── DatabaseError                Postgres did not answer or refused (driver error attached;
    │   │                            ``transient`` says whether retrying can help)
    │   ├── EmbeddedPostgresError    the embedded Postgres (no URL configured) would not start
    │   └── SchemaError              the schema is missing or behind: run `durableflow db upgrade`
    │       └── MigrationLockTimeout another process held the migration lock too long
    ├── WorkflowNotFound             no workflow/graph registered under that name
    ├── RunNotFound                  no run with that id in this schema
    ├── RunActionRefused             an operator action does not apply to the run as it stands
    │   └── PruneRefused             prune of a run that has not finished (or is still read from)
    ├── RunBlocked                   flow.result() of a run blocked for an operator (code changed)
    ├── DuplicateRun                 flow.start(dedup_key=...) while that key's run is in progress
    ├── ScheduleNotFound             no schedule with that name in this schema
    ├── RunFinished                  a signal was sent to a run that already finished
    ├── NotInWorkflow                a workflow-only call (ctx.sleep, ...) outside a workflow body
    ├── SerializationError           a value cannot be (de)serialised as JSON for its annotation,
    │   │                            or JSON cannot carry it faithfully (NUL, NaN, int keys)
    │   └── PayloadTooLarge          a serialised value is over the configured limit
    ├── IdempotencyConflict          an idempotency key already names a run of another
    │                                workflow, or one started with another input
    ├── WorkflowFailed               flow.result() of a run that failed, was cancelled or is dead
    ├── ResultTimeout                flow.result() gave up waiting; the run goes on
    ├── StepFailed                   a step exhausted its retries; re-raised identically on replay
    ├── StepTimeout                  one attempt of a step ran past its timeout (then retried)
    ├── NonRetryable                 raised by (or wrapping an error of) a step body: no retry
    ├── NonDeterminismError          replay met a different step than history recorded
    ├── LeaseLost                    another worker took this run over; this worker abandons it
    ├── InvalidFieldValue            a config, sidecar field or artefact name cannot be stored
    ├── ReplayError                  a replay's pre-flight found an artefact missing or corrupt
    ├── StorageError                 an artefact store failed or is misconfigured
    │   ├── StorageKeyError          a key is malformed or escapes its root; nothing was written
    │   ├── StorageIntegrityError    stored bytes do not match their sidecar's sha256 / size
    │   └── ArtefactNotFound         no object under that key
    ├── AuditError                   the version audit could not load its inputs
    └── GraphError                   a graph is invalid, or a graph run cannot go on (no transition)

Each class says when it is raised and what the caller should do. Attributes are
structured (``run_id=``, ``step=``) so handlers never parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class DurableFlowError(Exception):
    """Base class of every durableflow error."""


class ConfigurationError(DurableFlowError):
    """A setting is missing or malformed.

    Raised at construction time (``Flow(...)``, ``FlowSettings(...)``); also when a
    worker starts or a call is given a ``session`` whose database is not the schema's
    (``setting="sqlalchemy_engine"`` / ``"session"``, see docs/transactions.md); and
    when a call is given a malformed option or name: a queue name or priority
    (``flow.start``, ``ctx.start_child``), a signal name or event key, a duration that
    is NaN, infinite, negative or over 100 years (``ctx.sleep``, a wait's ``timeout``),
    a client ``timeout`` that is NaN or negative (``flow.result``, ``flow.get_event``).
    The message names the workflow and the call where there is one, ``setting`` the
    argument. Fix it; nothing has been written. Raised in a workflow body, it fails
    that run only (or the workflow catches it).
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class DatabaseError(DurableFlowError):
    """Postgres could not be reached or refused a statement.

    The driver's exception is chained as ``__cause__``. Nothing durable was half-done:
    every write is a single statement or transaction. ``transient`` is True when the
    fault is one that goes away by itself (a dropped or terminated connection, a
    server restarting, a timeout, a serialization failure or deadlock, too many
    connections): durableflow already retried run writes on fresh connections before
    letting it escape, so retrying later is reasonable. ``sqlstate`` is Postgres's
    error code when the server answered. Otherwise check the database URL, that the
    server is up, and the message.
    """

    def __init__(
        self, message: str, *, transient: bool = False, sqlstate: str | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.sqlstate = sqlstate


class EmbeddedPostgresError(DatabaseError):
    """The embedded Postgres could not be started.

    ``data_dir`` is the data directory; the message carries pgserver's error and the
    end of the server log. Fix the cause, or point ``DURABLEFLOW_DATABASE_URL`` at a
    Postgres server you run yourself.
    """

    def __init__(self, message: str, *, data_dir: object) -> None:
        super().__init__(message)
        self.data_dir = data_dir


class SchemaError(DatabaseError):
    """The durableflow schema is missing, or older than this version of the library.

    Run ``durableflow db upgrade`` (or ``await flow.migrate()``) against the database.
    """

    def __init__(self, message: str, *, schema: str, current: str | None, head: str | None) -> None:
        super().__init__(message)
        self.schema = schema
        self.current = current
        self.head = head


class MigrationLockTimeout(SchemaError):
    """Another process held the migration lock past the timeout.

    Another ``migrate()`` is probably running; wait for it or raise the timeout.
    """


class WorkflowNotFound(DurableFlowError):
    """No workflow (or graph) is registered under this name (and version).

    Register it with ``@flow.workflow(name=...)`` in the process that starts or runs it.
    """

    def __init__(self, name: str, *, version: int | None = None, known: list[str] | None = None):
        known_text = ", ".join(sorted(known)) if known else "none"
        which = f"{name!r}" if version is None else f"{name!r} version {version}"
        super().__init__(f"no workflow {which} is registered (registered: {known_text})")
        self.name = name
        self.version = version


class RunNotFound(DurableFlowError):
    """No run with this id exists in this Flow's schema."""

    def __init__(self, run_id: object) -> None:
        super().__init__(f"no run with id {run_id}")
        self.run_id = run_id


class RunActionRefused(DurableFlowError):
    """An operator action (``resume``, ``delete``) does not apply to the run as it stands.

    Raised, with nothing changed, for instance when resuming a run that succeeded or is
    still active, resuming a ``blocked`` run while no live worker runs its recorded code
    (pass ``force=True`` to accept other code), or deleting a run that is not finished.
    ``action`` names the action, ``status`` the run's status, ``reason`` says what to do.
    """

    def __init__(self, run_id: object, *, action: str, status: str, reason: str) -> None:
        super().__init__(f"cannot {action} run {run_id} ({status}): {reason}")
        self.run_id = run_id
        self.action = action
        self.status = status
        self.reason = reason


class RunBlocked(DurableFlowError):
    """``flow.result()`` of a run that is ``blocked``: it waits for an operator.

    A worker found the run's recorded code hash differs from its own (the workflow
    changed without a version bump). ``error`` is the recorded explanation (with
    ``recorded_code_hash`` and ``code_hash``). Deploy the old code and
    ``flow.resume(run_id)``, or ``flow.resume(run_id, force=True)`` to continue it on
    the new code; then wait for the result again.
    """

    def __init__(self, run_id: object, error: dict[str, Any]) -> None:
        super().__init__(
            f"run {run_id} is blocked: {error.get('message', 'waiting for an operator')}"
        )
        self.run_id = run_id
        self.error = error


class DuplicateRun(DurableFlowError):
    """``flow.start(..., queue=q, dedup_key=k)`` while a run with key ``k`` is in progress on ``q``.

    "In progress" is queued, running or waiting. ``run_id`` is that run: follow it
    (``flow.result(exc.run_id)``) instead of starting another, or start again once it
    has finished. Nothing was written.
    """

    def __init__(self, queue: str, dedup_key: str, run_id: object) -> None:
        super().__init__(
            f"run {run_id} with dedup key {dedup_key!r} is still in progress on queue {queue!r}"
        )
        self.queue = queue
        self.dedup_key = dedup_key
        self.run_id = run_id


class ScheduleNotFound(DurableFlowError):
    """No schedule with this name exists in this Flow's schema.

    List them with ``flow.list_schedules()``; a ``@flow.scheduled`` declaration is saved
    by the first leader that runs the declaring code.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")
        self.name = name


class RunFinished(DurableFlowError):
    """A signal was sent to a run that already finished: nothing will receive it.

    ``status`` is the run's final status, ``signal`` the signal's name. Nothing was
    stored. Check the run's status before sending, or treat this as "too late". Not
    raised for a send whose idempotency key the run already holds: that signal went in
    earlier (a retry whose first reply was lost, or the same call made again), and the
    repeat returns as the first did.
    """

    def __init__(self, run_id: object, status: str, *, signal: str) -> None:
        super().__init__(f"run {run_id} already {status}: signal {signal!r} was not sent")
        self.run_id = run_id
        self.status = status
        self.signal = signal


class NotInWorkflow(DurableFlowError):
    """A call that only a running workflow can make was made elsewhere.

    Durable waits and recorded values (``ctx.sleep``, ``ctx.wait_for_signal``,
    ``ctx.start_child``, ``ctx.now`` ...) belong to the workflow body: not to a step's
    body, nor to a ``FlowContext`` built outside a run. ``call`` names the call.
    """

    def __init__(self, call: str) -> None:
        super().__init__(
            f"{call} can only be called in the body of a running workflow (not inside a step)"
        )
        self.call = call


class SerializationError(DurableFlowError):
    """A value could not be turned into JSON (or read back) for its annotation.

    Also raised for values JSON (or Postgres) cannot carry faithfully, instead of
    silently changing them: a string containing U+0000, a float NaN or infinity, a
    dict key that is not a string where the annotation does not say how to convert
    it, a generator (consumed once), an idempotency key (of a run, a child run or a
    signal) or correlation id over 512 UTF-8 bytes or holding NUL. Raised where the
    value enters durableflow (``start``, ``send_signal``, ``ctx.start_child``, a step's
    return, a workflow's return), so it affects only its own run.

    ``what`` names the value (``"output of step 'fetch'"``); ``type_name`` its annotation;
    ``path`` where inside the value the problem is (``"output.items[3].name"``), when
    known; ``workflow`` / ``step`` the definition it belongs to. Return pydantic models,
    dataclasses or JSON builtins; durableflow never pickles.
    """

    def __init__(
        self,
        message: str,
        *,
        what: str,
        type_name: str,
        path: str | None = None,
        workflow: str | None = None,
        step: str | None = None,
    ) -> None:
        super().__init__(message)
        self.what = what
        self.type_name = type_name
        self.path = path
        self.workflow = workflow
        self.step = step


class PayloadTooLarge(SerializationError):
    """A serialised input or output is larger than ``max_payload_bytes``.

    Store large data as an artefact and pass its key instead.
    """


class IdempotencyConflict(DurableFlowError):
    """``start(..., idempotency_key=key)`` where ``key`` already belongs to a different run.

    Raised when the existing run (``run_id``) is of another workflow
    (``existing_workflow`` differs from ``workflow``), or of the same workflow but was
    started with another input (``reason`` is ``"workflow"`` or ``"input"``). The same
    key, workflow and input return the existing run instead. Use one key per intended
    run, for example ``f"charge-{order_id}"`` and ``f"ship-{order_id}"``.
    """

    def __init__(
        self, key: str, *, run_id: object, workflow: str, existing_workflow: str, reason: str
    ) -> None:
        if reason == "workflow":
            detail = (
                f"it belongs to run {run_id} of workflow {existing_workflow!r}, not to {workflow!r}"
            )
        else:
            detail = f"run {run_id} of workflow {workflow!r} was started with another input"
        super().__init__(
            f"idempotency key {key!r} is already used: {detail}; use a key per intended run"
        )
        self.key = key
        self.run_id = run_id
        self.workflow = workflow
        self.existing_workflow = existing_workflow
        self.reason = reason


class WorkflowFailed(DurableFlowError):
    """The run ended without succeeding; ``error`` is the recorded error.

    ``status`` is ``"failed"`` (the workflow raised), ``"cancelled"`` (``flow.cancel``)
    or ``"dead"`` (durableflow stopped a run that could not make progress: its outcome
    could not be recorded, or it was recovered more than ``max_recoveries`` times).
    ``error`` is a dict with ``type``, ``message`` and ``traceback``. The run is final;
    start a new run to try again.
    """

    def __init__(self, run_id: object, error: dict[str, Any], *, status: str = "failed") -> None:
        self.run_id = run_id
        self.error = error
        self.status = status
        super().__init__(
            f"run {run_id} {status}: {error.get('type', 'Error')}: {error.get('message', '')}"
        )

    @property
    def error_type(self) -> str:
        """Qualified name of the exception the workflow raised."""
        return str(self.error.get("type", ""))


class ResultTimeout(DurableFlowError):
    """``flow.result()`` waited ``timeout`` seconds; the run itself is not affected.

    The run may be queued (no worker serving its queue and version yet), running,
    waiting, or blocked for an operator: ``flow.status(run_id)`` says which.
    """

    def __init__(self, run_id: object, timeout: float) -> None:
        super().__init__(
            f"run {run_id} did not reach a final status within {timeout}s (it may be queued, "
            "running, waiting or blocked; flow.status() says which); the run is not affected"
        )
        self.run_id = run_id
        self.timeout = timeout


class StepFailed(DurableFlowError):
    """A step raised on its last attempt. Its error is checkpointed.

    Inside a workflow, catch ``StepFailed`` (not the original exception type): the same
    ``StepFailed`` is raised again on replay, from the record, so both paths agree.
    ``error_type`` holds the qualified name of the original exception.
    """

    def __init__(self, step: str, step_id: int, error: dict[str, Any]) -> None:
        self.step = step
        self.step_id = step_id
        self.error = error
        super().__init__(
            f"step {step!r} (#{step_id}) failed: {error.get('type', 'Error')}: "
            f"{error.get('message', '')}"
        )

    @property
    def error_type(self) -> str:
        """Qualified name of the exception the step raised."""
        return str(self.error.get("type", ""))


class StepTimeout(DurableFlowError):
    """One attempt of a step ran longer than its ``timeout``; the step is retried."""

    def __init__(self, step: str, timeout: float) -> None:
        super().__init__(f"step {step!r} timed out after {timeout}s")
        self.step = step
        self.timeout = timeout


class NonRetryable(DurableFlowError):
    """Raise it from a step body (or subclass it) for errors that retrying cannot fix.

    The step fails at once, whatever its ``retries``. Use it as a base class
    (``class CardDeclined(NonRetryable)``) or as a wrapper
    (``raise NonRetryable(exc) from exc``): the step's recorded error then names the
    wrapped exception's type and message, and ``cause`` holds it.
    """

    def __init__(self, cause: BaseException | str = "") -> None:
        self.cause = cause if isinstance(cause, BaseException) else None
        super().__init__(str(cause))


class NonDeterminismError(DurableFlowError):
    """Replay met a step other than the one history recorded at that position.

    The workflow's code changed in a way that reorders or renames its steps while runs
    were in flight. The run is failed rather than mixing two histories. Bump the
    workflow's version and keep the old code registered until its runs drain.
    """

    def __init__(self, run_id: object, step_id: int, recorded: str, called: str) -> None:
        super().__init__(
            f"run {run_id}: step #{step_id} was {recorded!r} in history but the code now "
            f"calls {called!r}; bump the workflow version instead of changing it in place"
        )
        self.run_id = run_id
        self.step_id = step_id
        self.recorded = recorded
        self.called = called


class LeaseLost(DurableFlowError):
    """Another worker took this run over; this worker's writes for it are refused.

    Raised inside the abandoned execution only. Nothing to do: the new owner finishes
    the run. Swallowing it does not help; the run's later writes are refused too.
    """

    def __init__(self, run_id: object, *, epoch: int) -> None:
        super().__init__(f"lost the lease on run {run_id} (epoch {epoch}); another worker owns it")
        self.run_id = run_id
        self.epoch = epoch


class InvalidFieldValue(DurableFlowError):
    """A value durableflow would store (a run's config, a custom sidecar field, an
    artefact name) cannot be stored faithfully, so it is refused before anything is written.

    ``field`` names where the value sits (``"config.thresholds[2]"``, ``"custom.rows"``,
    ``"name"``); ``reason`` says what is wrong with it (NUL character, NaN, a key that
    is not a string, a type JSON does not have, too large). Fix the value; nothing was
    stored and no run was started.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid value for {field}: {reason}")
        self.field = field
        self.reason = reason


class ReplayError(DurableFlowError):
    """``flow.replay()`` cannot republish what the new run needs; nothing was started.

    Raised by the pre-flight check, which reads every needed artefact's sidecar and
    verifies its sha256 before the new run exists: ``key`` names the missing or corrupt
    artefact (None when the problem is not one artefact, e.g. ``from_stage`` never ran),
    ``step`` the step whose output it is. Restore the artefact from a backup, or
    replay from an earlier stage so that the step runs again.
    """

    def __init__(
        self, run_id: object, reason: str, *, key: str | None = None, step: str | None = None
    ) -> None:
        where = f" (artefact {key!r}{f' of step {step!r}' if step else ''})" if key else ""
        super().__init__(f"cannot replay run {run_id}{where}: {reason}")
        self.run_id = run_id
        self.key = key
        self.step = step
        self.reason = reason


class PruneRefused(RunActionRefused):
    """``flow.prune(run_id)`` of a run that is not finished, or that a replay or fork
    still being executed reads its history or artefacts from.

    ``status`` is the run's status, ``action`` is ``"prune"``. Cancel the run (or wait
    for it, and for the runs made from it) and prune again. Nothing was deleted.
    """

    def __init__(self, run_id: object, status: str, reason: str) -> None:
        super().__init__(run_id, action="prune", status=status, reason=reason)


class StorageError(DurableFlowError):
    """An artefact store failed or is misconfigured; the message says what to fix."""


class StorageKeyError(StorageError):
    """A storage key is malformed or would escape the storage root. Nothing was written."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid storage key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class StorageIntegrityError(StorageError):
    """Stored bytes do not match the sha256/size in their sidecar, or the sidecar is missing.

    The object is incomplete or corrupt; rewrite it (writes to the same key are safe).
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"artefact {key!r} failed its integrity check: {reason}")
        self.key = key
        self.reason = reason


class ArtefactNotFound(StorageError):
    """No artefact is stored under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no artefact stored under {key!r}")
        self.key = key


class AuditError(DurableFlowError):
    """The version audit could not load the module, the Flow, or the manifest."""


@dataclass(frozen=True)
class GraphProblem:
    """One thing wrong with a graph: what, in which state, and where in a spec.

    ``state`` is None for problems of the graph as a whole (its name, its version);
    ``path`` locates the problem in a data-defined graph's spec (``states[2].action``,
    ``transitions[0].when.all[1]``) and, for a graph built in code, in declaration
    order (``transitions[3]`` is the fourth ``g.transition`` call).
    """

    message: str
    state: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = [self.path] if self.path else []
        if self.state is not None:
            where.append(f"state {self.state!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class GraphError(DurableFlowError):
    """A graph is invalid, or a graph run cannot go on.

    Raised by validation (``g.validate()``, ``Graph.from_spec``, ``flow.register_graph``,
    ``flow.publish_graph``) with every problem found at once in ``problems``: fix each
    one (in the spec, at its ``path``) and try again; nothing was registered or stored.
    Raised by ``flow.publish_graph`` for different content under a version already
    published (``path == "version"``): publish it as a new version. Raised by
    ``flow.start`` of a published graph naming an action this Flow lacks. Raised inside
    a graph run, failing the run, when no transition out of a state matches the
    payload, a guard raises or returns something other than a bool, or the run takes
    more than the graph's ``max_transitions``: fix the graph or the payload and start
    a new run.

    ``graph`` is the graph's name; ``state`` and ``path`` are those of the first
    problem (the only one for a run failure).
    """

    def __init__(self, graph: str | None, problems: Sequence[GraphProblem]) -> None:
        self.graph = graph
        self.problems = tuple(problems)
        first = self.problems[0] if self.problems else GraphProblem("invalid graph")
        self.state = first.state
        self.path = first.path
        if len(self.problems) <= 1:
            message = f"graph {graph!r}: {first}" if graph else str(first)
        else:
            lines = "".join(f"\n  - {problem}" for problem in self.problems)
            subject = f"graph {graph!r} has" if graph else "found"
            message = f"{subject} {len(self.problems)} problems:{lines}"
        super().__init__(message)
