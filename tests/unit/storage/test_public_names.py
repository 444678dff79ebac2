"""The curated public names of durableflow.storage and durableflow.testing."""

from __future__ import annotations

import inspect

import pytest

import durableflow.storage
import durableflow.testing


@pytest.mark.parametrize("module", [durableflow.storage, durableflow.testing])
def test_all_names_exist_and_are_documented(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert len(names) == len(set(names))
    for name in names:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


@pytest.mark.parametrize("module", [durableflow.storage, durableflow.testing])
def test_all_is_sorted_constants_then_classes_then_functions(module: object) -> None:
    names: list[str] = module.__all__  # type: ignore[attr-defined]

    def rank(name: str) -> tuple[int, str]:
        if name.isupper():
            return (0, name)
        return (1, name) if name[0].isupper() else (2, name)

    assert names == sorted(names, key=rank)


def test_public_methods_of_providers_are_documented() -> None:
    for cls in (
        durableflow.storage.BaseStorageProvider,
        durableflow.storage.FilesystemStorageProvider,
        durableflow.storage.MemoryStorageProvider,
        durableflow.storage.S3StorageProvider,
        durableflow.storage.ExecutionPathResolver,
    ):
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                assert inspect.getdoc(member), f"{cls.__name__}.{name} has no docstring"
