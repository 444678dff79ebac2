"""The curated public API: sorted, complete, documented."""

import inspect

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
