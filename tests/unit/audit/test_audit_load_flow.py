"""``load_flow('module:attribute')``: the Flow, or a message that says what to fix."""

from __future__ import annotations

import re
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from durableflow import Flow
from durableflow.cli.loading import load_flow
from durableflow.errors import ConfigurationError

FLOW_SOURCE = """
from durableflow import Flow

flow = Flow(database_url="postgresql://audit@127.0.0.1/unused")
other = Flow(database_url="postgresql://audit@127.0.0.1/unused", schema="other")
not_a_flow = 42

class Holder:
    flow = flow

def factory():
    return flow
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Chdir into ``tmp_path``; ``project(source)`` writes a module there and returns its name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"loading_example_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_loads_the_flow_from_the_current_directory(project: Callable[[str], str]) -> None:
    name = project(FLOW_SOURCE)
    flow = load_flow(f"{name}:flow")
    assert isinstance(flow, Flow)
    assert flow is sys.modules[name].flow


def test_dotted_attribute(project: Callable[[str], str]) -> None:
    name = project(FLOW_SOURCE)
    assert load_flow(f"{name}:Holder.flow") is sys.modules[name].flow


@pytest.mark.parametrize("spec", ["app", "app:", ":flow", "app:flow:x", "app-x:flow", "a..b:flow"])
def test_malformed_spec(spec: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape("expected 'package.module:attribute'")):
        load_flow(spec)


def test_missing_module(project: Callable[[str], str]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_flow("no_such_module_here.sub:flow")
    assert "cannot import 'no_such_module_here.sub'" in str(caught.value)
    assert "no module named 'no_such_module_here'" in str(caught.value)


def test_module_that_raises_on_import_includes_the_error(project: Callable[[str], str]) -> None:
    name = project("import os\n\nraise RuntimeError('database settings missing')\n")
    with pytest.raises(ConfigurationError) as caught:
        load_flow(f"{name}:flow")
    message = str(caught.value)
    assert f"module {name!r} failed to import" in message
    assert "RuntimeError: database settings missing" in message
    assert f"{name}.py, line 3" in message
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_module_importing_a_missing_dependency_names_it(project: Callable[[str], str]) -> None:
    name = project("import not_installed_dependency_xyz\n")
    with pytest.raises(ConfigurationError, match="ModuleNotFoundError: No module named"):
        load_flow(f"{name}:flow")


def test_module_with_a_syntax_error_names_file_and_line(project: Callable[[str], str]) -> None:
    name = project("x = 1\ndef broken(:\n    pass\n")
    with pytest.raises(ConfigurationError) as caught:
        load_flow(f"{name}:flow")
    assert "SyntaxError" in str(caught.value)
    assert "line 2" in str(caught.value)


def test_missing_attribute_lists_the_flows_there(project: Callable[[str], str]) -> None:
    name = project(FLOW_SOURCE)
    with pytest.raises(ConfigurationError) as caught:
        load_flow(f"{name}:flw")
    assert f"{name} has no attribute 'flw'" in str(caught.value)
    assert "Flow objects in that module: flow, other" in str(caught.value)


@pytest.mark.parametrize(
    ("attribute", "described"),
    [("not_a_flow", "is a int"), ("factory", "is the callable factory"), ("Holder", "the class")],
)
def test_object_that_is_not_a_flow(
    project: Callable[[str], str], attribute: str, described: str
) -> None:
    name = project(FLOW_SOURCE)
    with pytest.raises(ConfigurationError) as caught:
        load_flow(f"{name}:{attribute}")
    assert "not a durableflow.Flow" in str(caught.value)
    assert described in str(caught.value)
