"""What operators see: the records ``flow.list_runs()`` and friends return, and the
sections of a run's page that the CLI (``durableflow runs show``) and the web UI share.

- :mod:`~durableflow.admin.records`: :class:`RunSummary`, :class:`RunDetail`,
  :class:`RunPage`, :class:`StepAttempt`, :class:`WorkerInfo`, and :func:`jsonable`.
- :mod:`~durableflow.admin.sections`: :class:`RunSection` and
  :func:`register_run_section`, how a feature adds a section (signals, events,
  artefacts, the graph picture...) to every run page at once; :class:`SectionLink`,
  a table cell the UI shows as a link (to a run, or to an artefact's lineage).
- :mod:`~durableflow.admin.core_sections`: the sections of what the core records
  (Waiting, Signals, Events, Children), registered on import.
"""

from durableflow.admin import core_sections as _core_sections  # noqa: F401 - registers
from durableflow.admin.records import (
    RunDetail,
    RunPage,
    RunSummary,
    StepAttempt,
    WorkerInfo,
    jsonable,
)
from durableflow.admin.sections import (
    RunSection,
    SectionContent,
    SectionLink,
    load_run_sections,
    register_run_section,
    run_sections,
)

__all__ = [
    "RunDetail",
    "RunPage",
    "RunSection",
    "RunSummary",
    "SectionContent",
    "SectionLink",
    "StepAttempt",
    "WorkerInfo",
    "jsonable",
    "load_run_sections",
    "register_run_section",
    "run_sections",
]
