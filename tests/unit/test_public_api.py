"""The curated public API: sorted, complete, documented."""

import ast
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import durableflow
import durableflow.errors


def test_all_is_sorted_and_every_name_exists() -> None:
    assert durableflow.__all__ == sorted(durableflow.__all__)
    for name in durableflow.__all__:
        assert hasattr(durableflow, name), name


def test_every_error_class_is_exported_and_documented() -> None:
    for name, obj in vars(durableflow.errors).items():
        if inspect.isclass(obj) and issubclass(obj, durableflow.DurableFlowError):
            assert name in durableflow.__all__, name
            assert obj.__doc__, name


def test_every_error_derives_from_the_one_root() -> None:
    for name in durableflow.__all__:
        obj = getattr(durableflow, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, durableflow.DurableFlowError), name


def test_public_objects_have_docstrings() -> None:
    for name in durableflow.__all__:
        obj = getattr(durableflow, name)
        if callable(obj):
            assert inspect.getdoc(obj), name


# -- names resolved lazily (``import durableflow`` imports none of their modules) ----


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter, where nothing of durableflow is imported yet."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_from_durableflow_import_works_for_every_name_in_all() -> None:
    """Each name of ``__all__`` imports in a fresh interpreter, as the object it names."""
    code = textwrap.dedent(
        """
        import importlib, json, durableflow
        wrong = []
        for name in durableflow.__all__:
            namespace = {}
            exec(f"from durableflow import {name}", namespace)
            if name == "__version__":
                continue
            module = importlib.import_module(durableflow._MODULE_OF[name])
            if namespace[name] is not getattr(module, name):
                wrong.append(name)
        print(json.dumps(wrong))
        """
    )
    assert json.loads(run_fresh(code)) == []


def test_import_durableflow_imports_no_module_of_the_library() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import durableflow
        print(json.dumps(sorted(sys.modules)))
        """
    )
    loaded = set(json.loads(run_fresh(code)))
    assert {name for name in loaded if name.startswith("durableflow.")} == set()
    assert not loaded & {"pydantic", "pydantic_settings", "asyncpg", "sqlalchemy", "rich"}


def type_checking_imports() -> dict[str, tuple[str, ...]]:
    """What ``durableflow/__init__.py`` imports under ``if TYPE_CHECKING:``, by module."""
    tree = ast.parse(Path(durableflow.__file__).read_text(encoding="utf-8"))
    imports: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module
                imports[statement.module] = tuple(alias.name for alias in statement.names)
    return imports


def test_type_checkers_see_the_names_the_package_resolves() -> None:
    """The ``TYPE_CHECKING`` imports, the table ``__getattr__`` reads and ``__all__`` agree:
    a name added to one only would type-check but fail at run time, or the reverse."""
    lazy = durableflow._PUBLIC_MODULES
    assert type_checking_imports() == lazy
    names = [name for names in lazy.values() for name in names]
    assert len(names) == len(set(names))
    assert sorted(names) == [name for name in durableflow.__all__ if name != "__version__"]


def test_unknown_names_raise_attribute_error_and_dir_lists_public_names() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Flw'"):
        durableflow.Flw  # noqa: B018
    with pytest.raises(ImportError):
        exec("from durableflow import Flw", {})
    assert set(durableflow.__all__) <= set(dir(durableflow))


WORKER_MODULES = (
    "durableflow.runtime.worker",
    "durableflow.runtime.executor",
    "durableflow.runtime.duties",
    "durableflow.runtime.heartbeat",
)


def test_a_flow_loads_its_worker_only_when_asked_for_one() -> None:
    """Defining workflows (and starting runs, reading them) needs no worker; the worker,
    its executor and its leader duties are imported by ``start_worker`` or by
    ``durableflow.Worker``."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from durableflow import Flow, FlowContext

        flow = Flow(database_url="postgresql://nobody@127.0.0.1:9/none")

        @flow.step()
        async def add_one(ctx: FlowContext, x: int) -> int:
            return x + 1

        @flow.workflow(name="count", version=1)
        async def count(ctx: FlowContext, n: int) -> int:
            return await add_one(ctx, n)

        flow.worker(4)  # the context manager alone starts nothing
        defined = sorted(set({WORKER_MODULES!r}) & set(sys.modules))
        import durableflow
        durableflow.Worker
        asked = sorted(set({WORKER_MODULES!r}) & set(sys.modules))
        print(json.dumps([defined, asked]))
        """
    )
    defined, asked = json.loads(run_fresh(code))
    assert defined == []
    assert {"durableflow.runtime.worker", "durableflow.runtime.executor"} <= set(asked)
