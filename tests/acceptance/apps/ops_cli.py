"""``durableflow`` operator commands run as processes against one test database (the
``cli`` fixture), for the tests of the operator CLI and of ``durableflow ui``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from apps.harness import FAST_WORKER_SETTINGS, Completed, Processes

APP = "apps.ops_app:flow"


class Cli:
    """Runs ``durableflow`` commands against one database and parses ``--json`` output."""

    def __init__(self, processes: Processes, database_url: str, flags: Path) -> None:
        self.processes = processes
        self.env = {
            "DURABLEFLOW_DATABASE_URL": database_url,
            "OPS_APP_FLAGS": str(flags),
            **FAST_WORKER_SETTINGS,
        }

    async def run(self, *args: str) -> Completed:
        return await self.processes.run(list(args), self.env)

    async def json(self, *args: str, expect: int = 0) -> Any:
        result = await self.run(*args, "--json")
        assert result.returncode == expect, result
        return json.loads(result.stdout)

    def worker(self, name: str, **env: str) -> Any:
        return self.processes.worker(name, APP, {**self.env, **env})
