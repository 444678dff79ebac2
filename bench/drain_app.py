"""The benchmark's Flow as an app module, for ``durableflow worker drain_app:flow``.

Settings come from ``DURABLEFLOW_*`` variables (``drain_bench.py`` sets the URL); the
step and workflow are the ones of ``durableflow_bench.py``, so runs started there are
run here with the same code hash.
"""

from durableflow_bench import build_flow

flow, workflow = build_flow(None)
