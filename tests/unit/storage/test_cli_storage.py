"""``durableflow storage metadata`` and ``ls`` against a real folder.

The parser is built the way the CLI's ``main()`` builds it: a top-level parser whose
subparsers receive ``register``. ``watch`` needs an event channel and is tested in
tests/integration/storage/test_events.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from durableflow.cli.storage_cmd import register
from durableflow.storage import FilesystemStorageProvider, StorageMetadata


async def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="durableflow")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = await args.func(args)
    return result


@pytest.fixture
async def filled_root(tmp_path: Path) -> Path:
    async with FilesystemStorageProvider(tmp_path) as storage:
        await storage.write(
            "executions/r1/main/fetch/m1.json",
            b"{}",
            StorageMetadata.model_validate({"step_name": "fetch", "from_the_future": 1}),
        )
        await storage.write("executions/r1/main/parse/m1.json", b"[]")
        await storage.write("executions/r2/main/fetch/m1.json", b"{}")
    return tmp_path


async def test_metadata_prints_the_sidecar(
    filled_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run_cli(
        "storage",
        "metadata",
        "executions/r1/main/fetch/m1.json",
        "--storage",
        f"file://{filled_root}",
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step_name"] == "fetch"
    assert printed["execution_id"] == "r1"
    assert printed["size"] == 2
    assert printed["from_the_future"] == 1


async def test_storage_url_comes_from_the_environment(
    filled_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLEFLOW_STORAGE_URL", f"file://{filled_root}")
    assert await run_cli("storage", "ls", "executions/r1") == 0
    assert capsys.readouterr().out.splitlines() == [
        "executions/r1/main/fetch/m1.json",
        "executions/r1/main/parse/m1.json",
    ]


async def test_ls_everything(filled_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("storage", "ls", "--storage", f"file://{filled_root}") == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


async def test_ls_as_json(filled_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = f"file://{filled_root}"
    assert await run_cli("storage", "ls", "executions/r1", "--json", "--storage", root) == 0
    assert json.loads(capsys.readouterr().out) == [
        "executions/r1/main/fetch/m1.json",
        "executions/r1/main/parse/m1.json",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("metadata", "executions/none/main/fetch/m1"), "no artefact stored under"),
        (("metadata", "../etc/passwd"), "invalid storage key"),
        (("ls", "/absolute"), "invalid storage key"),
    ],
)
async def test_errors_are_one_line_and_exit_1(
    filled_root: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code = await run_cli("storage", *argv, "--storage", f"file://{filled_root}")
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("durableflow storage: ")
    assert message in captured.err


async def test_no_storage_configured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DURABLEFLOW_STORAGE_URL", raising=False)
    assert await run_cli("storage", "ls") == 1
    assert "DURABLEFLOW_STORAGE_URL" in capsys.readouterr().err


async def test_watch_without_a_channel(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DURABLEFLOW_STORAGE_EVENTS_URL", raising=False)
    monkeypatch.delenv("DURABLEFLOW_DATABASE_URL", raising=False)
    assert await run_cli("storage", "watch", "--execution", "r1") == 1
    assert "--events" in capsys.readouterr().err
