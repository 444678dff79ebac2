"""The real Mermaid parser, for tests that check the diagrams durableflow prints.

Mermaid is JavaScript, so the parser runs on node: npm's ``mermaid`` package (plus
``jsdom``, because Mermaid wants a DOM as it loads) is installed once into a cache
folder outside the repository (``DURABLEFLOW_MERMAID_CACHE``, default
``~/.cache/durableflow-tests/mermaid-11``) and ``mermaid/parse_mermaid.mjs`` runs
there. One node process parses a whole batch of diagrams.

Usage in a test::

    results = _mermaid.parse([graph.to_mermaid()])
    assert results[0]["ok"], results[0]["error"]
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PACKAGES = ("mermaid@11", "jsdom@26")
SCRIPT = Path(__file__).parent / "mermaid" / "parse_mermaid.mjs"
INSTALL_TIMEOUT = 600.0
PARSE_TIMEOUT = 180.0


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "durableflow-tests" / "mermaid-11"
    return Path(os.environ.get("DURABLEFLOW_MERMAID_CACHE", default))


def unavailable_reason() -> str | None:
    """Why the real parser cannot run here (None when node and npm are installed)."""
    if shutil.which("node") is None:
        return "node is not installed: the real Mermaid parser runs on node (apt install nodejs)"
    if shutil.which("npm") is None:
        return "npm is not installed: it installs the Mermaid parser (apt install npm)"
    return None


def require() -> None:
    """Skip the calling test where the parser cannot run; in CI (``CI`` set), fail it:
    a diagram nobody parsed must not pass as checked."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One installer at a time: test runs of several worktrees share the cache."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def install() -> Path:
    """Install mermaid and jsdom into the cache (once); return the script to run."""
    directory = cache_dir()
    with _locked(directory):
        ready = directory / "node_modules" / "mermaid" / "package.json"
        if not ready.exists() or not (directory / "node_modules" / "jsdom").exists():
            completed = subprocess.run(
                [
                    "npm",
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(directory),
                    *PACKAGES,
                ],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
            if completed.returncode != 0:
                raise RuntimeError(f"npm install {' '.join(PACKAGES)} failed:\n{completed.stderr}")
        # Node resolves `import "mermaid"` from the script's folder: run a copy there.
        script = directory / SCRIPT.name
        if not script.exists() or script.read_text() != SCRIPT.read_text():
            shutil.copyfile(SCRIPT, script)
    return script


def parse(texts: list[str]) -> list[dict[str, Any]]:
    """What the real Mermaid parser makes of each text (see parse_mermaid.mjs)."""
    script = install()
    completed = subprocess.run(
        ["node", str(script)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=PARSE_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"node {script.name} failed:\n{completed.stderr}")
    results: list[dict[str, Any]] = json.loads(completed.stdout)
    return results


_NUMERIC_ENTITY = re.compile("\ufb02\u00b0\u00b0(\\d+)\u00b6\u00df")
_NAMED_ENTITY = re.compile("\ufb02\u00b0(\\w+)\u00b6\u00df")


def decode(text: str) -> str:
    """A label as it will be drawn: Mermaid keeps ``#quot;`` style codes as placeholders."""
    text = _NUMERIC_ENTITY.sub(lambda match: chr(int(match.group(1))), text)
    return _NAMED_ENTITY.sub(lambda match: html.unescape(f"&{match.group(1)};"), text)
