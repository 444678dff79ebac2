"""The runnable examples of docs/graphs.md run, as they are written there.

Each block after an ``<!-- example: NAME -->`` marker is written to a file, imported as a
module (``Flow()`` reads ``DURABLEFLOW_DATABASE_URL``: the test's database) and its
``main()`` awaited.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from durableflow.config import reset_config

DOC = Path(__file__).resolve().parents[3] / "docs" / "graphs.md"
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```python\n(.*?)```", re.DOTALL)
EXAMPLES = dict(EXAMPLE.findall(DOC.read_text()))


def test_the_doc_has_its_examples() -> None:
    assert set(EXAMPLES) == {"onboarding", "data-defined"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
async def test_a_docs_example_runs(
    name: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLEFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("DURABLEFLOW_POLL_INTERVAL", "0.05")
    reset_config()
    module_name = f"graphs_doc_{name.replace('-', '_')}"
    path = tmp_path / f"{module_name}.py"
    path.write_text(EXAMPLES[name])
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        assert module.flow.settings.database_url == database_url
        await module.main()
    finally:
        sys.modules.pop(module_name, None)
        reset_config()
