"""Load example workflow modules written into ``tmp_path``, each under its own name."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from audit_examples import ModuleLoader, write_module


@pytest.fixture
def load_module(tmp_path: Path) -> Iterator[ModuleLoader]:
    """``load_module(source)`` imports the source as a fresh module and returns it."""
    loaded: list[str] = []

    def load(source: str, name: str | None = None) -> ModuleType:
        module_name, path = write_module(tmp_path, source, name)
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        loaded.append(module_name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
