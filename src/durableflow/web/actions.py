"""Actions on a run in the web UI: buttons on the run's page, POSTed with the token.

Built in: ``cancel`` and ``resume``. A feature adds one (fork, replay, send a signal)
with a :class:`RunAction` whose ``perform`` calls the public API::

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
the origin again on every POST, whatever the page showed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from durableflow.admin import RunDetail
from durableflow.errors import ConfigurationError

ActionHandler = Callable[[Any, RunDetail, Mapping[str, str]], Awaitable[str]]


@dataclass(frozen=True)
class ActionField:
    """An input of an action's form (``kind`` is an HTML input type, or ``textarea``)."""

    name: str
    label: str
    kind: str = "text"
    required: bool = True


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


async def _cancel(flow: Any, run: RunDetail, form: Mapping[str, str]) -> str:
    if await flow.cancel(run.id, form.get("reason") or "cancelled from the web UI"):
        return "cancelled"
    return f"not cancelled: the run is already {(await flow.describe_run(run.id)).status}"


async def _resume(flow: Any, run: RunDetail, form: Mapping[str, str]) -> str:
    await flow.resume(run.id, force=form.get("force") == "on")
    return "queued again"


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
