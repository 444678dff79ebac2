"""What operators see: the records ``flow.list_runs()`` and friends return, and the
sections of a run's page that the CLI (``durableflow runs show``) and the web UI share.

- :mod:`~durableflow.admin.records`: :class:`RunSummary`, :class:`RunDetail`,
  :class:`RunPage`, :class:`StepAttempt`, :class:`WorkerInfo`, and :func:`jsonable`.
- :mod:`~durableflow.admin.sections`: :class:`RunSection` and
  :func:`register_run_section`, how a feature adds a section (signals, events,
  artefacts, the graph picture...) to every run page at once.
"""

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
    "StepAttempt",
    "WorkerInfo",
    "jsonable",
    "load_run_sections",
    "register_run_section",
    "run_sections",
]
