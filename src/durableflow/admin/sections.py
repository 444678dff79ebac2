"""Sections of a run's page, shared by ``durableflow runs show`` and the web UI.

The core of a run's page (status, timings, input, output or error, the steps and
their attempts) is always there. Everything a feature records about a run besides
that (signals, events, artefacts, a graph's picture...) is a *section*: a title and
an async loader that returns the section's content for one run, or ``None`` when the
run has nothing to show. The CLI and the web UI render every registered section the
same generic way, so a feature adds its part of both with one function::

    from durableflow.admin import RunSection, SectionContent, register_run_section

    async def load_signals(flow, run):
        signals = await flow.signals(run.id)
        if not signals:
            return None
        return SectionContent.table(
            ["name", "sent", "consumed by step"],
            [[s.name, s.sent_at, s.consumed_by_step] for s in signals],
        )

    register_run_section(RunSection("signals", "Signals", load_signals, order=10))

Register at import time of the feature's module (a module ``durableflow`` imports
anyway), with a unique ``name``; ``order`` places the section on the page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from durableflow.errors import ConfigurationError, DurableFlowError

if TYPE_CHECKING:
    from durableflow.admin.records import RunDetail

logger = logging.getLogger("durableflow.admin")

SectionKind = Literal["table", "json", "text", "diagram"]


@dataclass(frozen=True)
class SectionContent:
    """What a section shows: a table, a JSON value, plain text, or a Mermaid diagram.

    Build one with :meth:`table`, :meth:`json`, :meth:`text` or :meth:`diagram`. Every
    value is escaped by the UI and printed as text by the CLI: never pre-format HTML.
    """

    kind: SectionKind
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    value: Any = None
    caption: str | None = None

    @classmethod
    def table(
        cls, columns: list[str], rows: list[list[Any]], *, caption: str | None = None
    ) -> SectionContent:
        """Rows of cells under ``columns``."""
        return cls(
            "table", columns=list(columns), rows=[list(row) for row in rows], caption=caption
        )

    @classmethod
    def json(cls, value: Any, *, caption: str | None = None) -> SectionContent:
        """A JSON value, shown pretty-printed."""
        return cls("json", value=value, caption=caption)

    @classmethod
    def text(cls, value: str, *, caption: str | None = None) -> SectionContent:
        """Preformatted text (a log excerpt, a traceback)."""
        return cls("text", value=value, caption=caption)

    @classmethod
    def diagram(cls, mermaid: str, *, caption: str | None = None) -> SectionContent:
        """A Mermaid diagram (for instance ``graph.to_mermaid(current=state)``).

        The web UI draws it as SVG in the page with the vendored Mermaid; the CLI
        prints its source.
        """
        return cls("diagram", value=mermaid, caption=caption)


SectionLoader = Callable[[Any, "RunDetail"], Awaitable[SectionContent | None]]


@dataclass(frozen=True)
class RunSection:
    """A titled part of every run's page; ``load(flow, run)`` fills it for one run."""

    name: str
    title: str
    load: SectionLoader
    order: int = 100


_sections: dict[str, RunSection] = {}


def register_run_section(section: RunSection, *, replace: bool = False) -> None:
    """Add ``section`` to every run page (CLI and UI). Names are unique unless ``replace``."""
    if section.name in _sections and not replace:
        raise ConfigurationError(f"a run section named {section.name!r} is already registered")
    _sections[section.name] = section


def unregister_run_section(name: str) -> None:
    """Remove a section (tests, or an application hiding one)."""
    _sections.pop(name, None)


def run_sections() -> list[RunSection]:
    """The registered sections in page order."""
    return sorted(_sections.values(), key=lambda section: (section.order, section.name))


async def load_run_sections(flow: Any, run: RunDetail) -> list[tuple[RunSection, SectionContent]]:
    """Each section's content for ``run``, leaving out those with nothing to show.

    A section whose loader raises a durableflow error (its tables missing on an older
    schema, say) is shown as that error's text rather than breaking the whole page.
    """
    loaded: list[tuple[RunSection, SectionContent]] = []
    for section in run_sections():
        try:
            content = await section.load(flow, run)
        except DurableFlowError as exc:
            logger.warning(
                "run section %s failed for run %s: %s",
                section.name,
                run.id,
                exc,
                extra={"event": "run_section_failed", "run_id": str(run.id)},
            )
            content = SectionContent.text(f"could not load: {exc}")
        if content is not None:
            loaded.append((section, content))
    return loaded
