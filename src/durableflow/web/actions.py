"""Actions in the web UI: buttons on run pages and on the schedules page, POSTed with
the token.

Built in, on runs: ``cancel``, ``resume``, ``signal`` (name and JSON payload),
``fork`` (from a step) and ``replay`` (from a stage, with an optional configuration);
on schedules: ``pause``, ``resume``, ``trigger``. A feature adds a run action with a
:class:`RunAction` whose ``perform`` calls the public API::

    async def fork(flow, run, form):
        new_id = await flow.fork(run.id, from_step=int(form["from_step"]))
        return f"forked as {new_id}"

    register_run_action(
        RunAction(
            "fork", "Fork", fork,
            applies=lambda run: run.done,
            fields=[ActionField("from_step", "from step #", kind="number")],
        )
    )

The UI shows an action's button (with its fields) on runs it ``applies`` to, only to
users who logged in with the token; the server checks the token, the CSRF token and
the origin again on every POST, whatever the page showed. Form values arrive as
text: a handler validates them and raises :class:`ActionInputError` (or lets a
durableflow error through) for a value it cannot use; the operator sees the message,
with status 400, never a server error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from durableflow.admin import RunDetail
from durableflow.errors import ConfigurationError


class ActionInputError(ValueError):
    """A value typed into an action's form cannot be used; the message says why."""


@dataclass(frozen=True)
class ActionResult:
    """What an action did; with ``run_id``, the browser goes to that (new) run's page."""

    message: str
    run_id: UUID | None = None


ActionHandler = Callable[[Any, RunDetail, Mapping[str, str]], Awaitable[str | ActionResult]]


@dataclass(frozen=True)
class ActionField:
    """An input of an action's form (``kind`` is an HTML input type, or ``textarea``)."""

    name: str
    label: str
    kind: str = "text"
    required: bool = True
    placeholder: str = ""


@dataclass(frozen=True)
class RunAction:
    """A button on a run's page; ``perform(flow, run, form)`` returns a message to show."""

    name: str
    label: str
    perform: ActionHandler
    applies: Callable[[RunDetail], bool] = lambda run: True
    fields: list[ActionField] = field(default_factory=list)
    confirm: str | None = None  # asked in the browser before posting
    danger: bool = False


_actions: dict[str, RunAction] = {}


def register_run_action(action: RunAction, *, replace: bool = False) -> None:
    """Add ``action`` to the run pages. Names are unique unless ``replace``."""
    if action.name in _actions and not replace:
        raise ConfigurationError(f"a run action named {action.name!r} is already registered")
    _actions[action.name] = action


def run_action(name: str) -> RunAction | None:
    return _actions.get(name)


def run_actions() -> list[RunAction]:
    return list(_actions.values())


def json_field(form: Mapping[str, str], name: str, label: str) -> Any:
    """The JSON value typed into field ``name`` (empty: ``None``), or ActionInputError."""
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ActionInputError(f"the {label} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ActionInputError(f"the {label} is nested too deeply to read") from None
    except ValueError as exc:  # valid JSON still refused, e.g. an integer too long to convert
        raise ActionInputError(f"the {label} cannot be read: {exc}") from None


def text_field(form: Mapping[str, str], name: str, label: str) -> str:
    """The non-empty text typed into field ``name``, or ActionInputError."""
    value = form.get(name, "").strip()
    if not value:
        raise ActionInputError(f"give the {label}")
    return value


async def _cancel(flow: Any, run: RunDetail, form: Mapping[str, str]) -> str:
    if await flow.cancel(run.id, form.get("reason") or "cancelled from the web UI"):
        return "cancelled"
    return f"not cancelled: the run is already {(await flow.describe_run(run.id)).status}"


async def _resume(flow: Any, run: RunDetail, form: Mapping[str, str]) -> str:
    await flow.resume(run.id, force=form.get("force") == "on")
    return "queued again"


async def _signal(flow: Any, run: RunDetail, form: Mapping[str, str]) -> str:
    name = text_field(form, "name", "signal's name")
    payload = json_field(form, "payload", "payload")
    key = form.get("idempotency_key", "").strip() or None
    await flow.send_signal(run.id, name, payload, idempotency_key=key)
    return f"signal {name!r} sent"


async def _fork(flow: Any, run: RunDetail, form: Mapping[str, str]) -> ActionResult:
    step = text_field(form, "from_step", "step (its number or name)")
    number = step.isascii() and step.isdigit()
    new_id = await flow.fork(run.id, from_step=int(step) if number else step)
    return ActionResult(f"forked from run {run.id} at step {step}", run_id=new_id)


async def _replay(flow: Any, run: RunDetail, form: Mapping[str, str]) -> ActionResult:
    stage = text_field(form, "from_stage", "stage (a step's or graph state's name)")
    config = json_field(form, "config", "configuration")
    new_id = await flow.replay(run.id, from_stage=stage, config=config)
    return ActionResult(f"replayed run {run.id} from stage {stage!r}", run_id=new_id)


register_run_action(
    RunAction(
        "cancel",
        "Cancel",
        _cancel,
        applies=lambda run: not run.done and run.status != "blocked",
        confirm="Cancel this run?",
        danger=True,
    )
)
register_run_action(
    RunAction(
        "resume",
        "Resume",
        _resume,
        applies=lambda run: run.status in ("failed", "cancelled", "dead", "blocked"),
        fields=[ActionField("force", "force (blocked runs: accept other code)", "checkbox", False)],
    )
)
register_run_action(
    RunAction(
        "signal",
        "Send signal",
        _signal,
        applies=lambda run: not run.done,
        fields=[
            ActionField("name", "signal", placeholder="approve"),
            ActionField(
                "payload", "payload (JSON)", "textarea", False, placeholder='{"by": "ops"}'
            ),
            ActionField("idempotency_key", "idempotency key", required=False),
        ],
    )
)
register_run_action(
    RunAction(
        "fork",
        "Fork",
        _fork,
        applies=lambda run: run.done or run.status == "blocked",
        fields=[ActionField("from_step", "from step (# or name)", placeholder="2")],
    )
)
register_run_action(
    RunAction(
        "replay",
        "Replay",
        _replay,
        applies=lambda run: run.done or run.status == "blocked",
        fields=[
            ActionField("from_stage", "from stage", placeholder="convert"),
            ActionField(
                "config", "config (JSON; empty: the run's)", "textarea", False, placeholder="{}"
            ),
        ],
    )
)


# -- schedules --------------------------------------------------------------------------

ScheduleHandler = Callable[[Any, str], Awaitable[str]]


async def _pause_schedule(flow: Any, name: str) -> str:
    await flow.pause_schedule(name)
    return f"schedule {name!r} paused"


async def _resume_schedule(flow: Any, name: str) -> str:
    await flow.resume_schedule(name)
    return f"schedule {name!r} resumed"


async def _trigger_schedule(flow: Any, name: str) -> str:
    return f"schedule {name!r} triggered: run {await flow.trigger_schedule(name)}"


SCHEDULE_ACTIONS: dict[str, ScheduleHandler] = {
    "pause": _pause_schedule,
    "resume": _resume_schedule,
    "trigger": _trigger_schedule,
}
