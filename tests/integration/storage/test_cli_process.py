"""``durableflow storage ...`` as a real process, through the CLI's main()."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from durableflow.storage import FilesystemStorageProvider, StorageMetadata


async def run_durableflow(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "durableflow.cli",
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_metadata_of_a_written_artefact(tmp_path: Path) -> None:
    key = "executions/run-9/main/fetch/m1.json"
    async with FilesystemStorageProvider(tmp_path) as storage:
        await storage.write(key, b"{}", StorageMetadata(step_name="fetch"))
    code, out, err = await run_durableflow(
        "storage", "metadata", key, env={"DURABLEFLOW_STORAGE_URL": f"file://{tmp_path}"}
    )
    assert code == 0, err
    sidecar = json.loads(out)
    assert (sidecar["execution_id"], sidecar["step_name"], sidecar["size"]) == ("run-9", "fetch", 2)
