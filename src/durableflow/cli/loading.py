"""Find the user's ``Flow`` from a ``package.module:attribute`` spec, as uvicorn finds apps."""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from typing import TYPE_CHECKING

from durableflow.errors import ConfigurationError

if TYPE_CHECKING:
    from durableflow.flow import Flow

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def load_flow(spec: str) -> Flow:
    """Import ``package.module`` and return its ``attribute``, which must be a ``Flow``.

    The current directory is put first on ``sys.path`` (as uvicorn does), so
    ``durableflow audit app.workflows:flow`` works from the project root without
    installing the project. ``attribute`` may be dotted (``module:container.flow``).

    Raises ``ConfigurationError`` with a message saying what to fix when the spec is
    malformed, the module does not import (the import error is included and chained),
    the attribute is missing, or it is not a ``Flow``.
    """
    module_name, attribute = _split(spec)
    _put_cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and _is_prefix(exc.name, module_name):
            raise ConfigurationError(
                f"cannot import {module_name!r}: no module named {exc.name!r} (searched the "
                f"current directory {os.getcwd()} and sys.path); run from the project root or "
                "install the project",
                setting="app",
            ) from exc
        raise _import_failed(module_name, exc) from exc
    except Exception as exc:  # any error raised while the module runs is the user's to fix
        raise _import_failed(module_name, exc) from exc

    value: object = module
    for index, part in enumerate(attribute.split(".")):
        try:
            value = getattr(value, part)
        except AttributeError:
            where = module_name if index == 0 else f"{module_name}:{attribute.rsplit('.', 1)[0]}"
            raise ConfigurationError(
                f"{where} has no attribute {part!r}{_flows_hint(module)}",
                setting="app",
            ) from None

    from durableflow.flow import Flow  # late: loading a spec must not import the engine early

    if not isinstance(value, Flow):
        raise ConfigurationError(
            f"{spec} is {_describe(value)}, not a durableflow.Flow; point at the Flow instance "
            f"your workflows are registered on{_flows_hint(module)}",
            setting="app",
        )
    return value


def _split(spec: str) -> tuple[str, str]:
    module_name, colon, attribute = spec.strip().partition(":")
    if not colon or not _DOTTED.match(module_name) or not _DOTTED.match(attribute):
        raise ConfigurationError(
            f"expected 'package.module:attribute' (for example 'app.workflows:flow'), got {spec!r}",
            setting="app",
        )
    return module_name, attribute


def _put_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _is_prefix(missing: str, module_name: str) -> bool:
    """True when the missing module is ``module_name`` itself or one of its parents."""
    return module_name == missing or module_name.startswith(missing + ".")


def _import_failed(module_name: str, exc: BaseException) -> ConfigurationError:
    location = ""
    frames = traceback.extract_tb(exc.__traceback__)
    user_frames = [frame for frame in frames if "importlib" not in frame.filename]
    if isinstance(exc, SyntaxError) and exc.filename:
        location = f" ({exc.filename}, line {exc.lineno})"
    elif user_frames:
        frame = user_frames[-1]
        location = f" ({frame.filename}, line {frame.lineno})"
    return ConfigurationError(
        f"module {module_name!r} failed to import: {type(exc).__name__}: {exc}{location}",
        setting="app",
    )


def _flows_hint(module: object) -> str:
    from durableflow.flow import Flow

    names = sorted(name for name, value in vars(module).items() if isinstance(value, Flow))
    if not names:
        return ""
    return f" (Flow objects in that module: {', '.join(names)})"


def _describe(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    if callable(value):
        name = getattr(value, "__qualname__", type(value).__qualname__)
        return f"the callable {name}"
    return f"a {type(value).__qualname__}"
