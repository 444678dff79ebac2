"""The admin web UI (the ``ui`` extra): ``flow.admin_app()`` or ``durableflow ui``.

- :func:`create_app`: the Starlette app for one Flow.
- :mod:`~durableflow.web.actions`: :class:`RunAction` and :func:`register_run_action`,
  how a feature adds a button (fork, replay, send a signal) to the run pages.
- Sections of the run page (signals, events, artefacts, the graph picture) are
  registered once for the CLI and the UI alike: see :mod:`durableflow.admin.sections`.
"""

from durableflow.web.actions import ActionField, RunAction, register_run_action
from durableflow.web.app import create_app

__all__ = ["ActionField", "RunAction", "create_app", "register_run_action"]
