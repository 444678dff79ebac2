"""Example graphs shared by the graph unit tests."""

from __future__ import annotations

from typing import Any

from durableflow import Graph


async def passthrough(ctx: Any, payload: Any) -> Any:
    return payload


def onboarding() -> Graph:
    """The issue's example: a manual state, then a terminal one."""
    g = Graph(name="user.onboarding", version=1, initial="email_pending")

    @g.state("email_pending", manual=True)
    async def email_pending(ctx: Any, payload: Any) -> Any:
        return payload

    @g.state("verified", terminal=True)
    async def verified(ctx: Any, payload: Any) -> Any:
        return payload

    g.transition("email_pending", "verified")
    return g


def is_large(payload: Any) -> bool:
    return bool(payload.get("amount", 0) > 1000)


def review() -> Graph:
    """Guards (Python and declarative), a fallback, a cycle, two manual states."""
    g = Graph(name="article.review", version=3, initial="draft")
    g.add_state("draft", passthrough)
    g.add_state("review", passthrough, manual=True, signal="decision")
    g.add_state("changes_requested", passthrough, manual=True, signal="resubmit")
    g.add_state("escalated", passthrough)
    g.add_state("published", passthrough, terminal=True)
    g.add_state("rejected", passthrough, terminal=True)
    g.transition("draft", "review")
    g.transition("review", "escalated", when=is_large)
    g.transition("review", "published", when={"field": "verdict", "equals": "approve"})
    g.transition("review", "rejected", when={"field": "verdict", "in": ["reject", "spam"]})
    g.transition("review", "changes_requested")
    g.transition("changes_requested", "review")
    g.transition("escalated", "published", when=lambda payload: payload.get("ok") is True)
    g.transition("escalated", "rejected")
    return g


def onboarding_spec() -> dict[str, Any]:
    """A data-defined graph using every condition operator."""
    return {
        "name": "tenant.onboarding",
        "version": 2,
        "initial": "collect",
        "states": [
            {"name": "collect", "action": "send_email", "manual": True, "signal": "submitted"},
            {"name": "check", "action": "score", "retries": 2, "timeout": 30},
            {"name": "manual_review", "manual": True},
            {"name": "approved", "terminal": True, "action": "welcome"},
            {"name": "declined", "terminal": True},
        ],
        "transitions": [
            {"from": "collect", "to": "check", "when": {"field": "form.email", "exists": True}},
            {"from": "collect", "to": "collect"},
            {
                "from": "check",
                "to": "approved",
                "when": {
                    "all": [
                        {"field": "score.band", "in": ["A", "B"]},
                        {"not": {"field": "flags.0", "equals": "sanctioned"}},
                    ]
                },
            },
            {
                "from": "check",
                "to": "declined",
                "when": {
                    "any": [
                        {"field": "flags.0", "equals": "sanctioned"},
                        {"field": "score.band", "equals": "E"},
                    ]
                },
            },
            {"from": "check", "to": "manual_review"},
            {
                "from": "manual_review",
                "to": "approved",
                "when": {"field": "decision", "equals": "approve"},
            },
            {"from": "manual_review", "to": "declined"},
        ],
    }


async def send_email(ctx: Any, payload: Any) -> Any:
    return payload


async def score(ctx: Any, payload: Any) -> Any:
    return payload


async def welcome(ctx: Any, payload: Any) -> Any:
    return payload


ACTIONS = {"send_email": send_email, "score": score, "welcome": welcome}
