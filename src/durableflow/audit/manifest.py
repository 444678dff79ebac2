"""The committed manifest, ``durableflow.lock.json``: each workflow's version and code hash.

The file maps each workflow (or graph) name to its highest registered version::

    {
      "ingest": {
        "code_hash": "3f0c...",
        "hash_version": 1,
        "older_versions": {
          "1": "9ab2..."
        },
        "version": 2
      }
    }

``older_versions`` appears only while older versions of that name are still registered
(kept so their in-flight runs can drain); they are audited too, because a run started
by version 1 must resume on the same version-1 code. Keys are sorted and indented by
two spaces, with one workflow per entry and a final newline, so a change shows up as a
small diff in review.

The file is small and local, so it is read and written synchronously.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durableflow.audit.graphs import PUBLISHED_KEY
from durableflow.audit.hashing import HASH_VERSION, compute_code_hash
from durableflow.engine.registry import Registry
from durableflow.errors import AuditError

MANIFEST_FILENAME = "durableflow.lock.json"
"""Default file name, placed next to the project's ``pyproject.toml``."""

_HASH = re.compile(r"^[0-9a-f]{64}$")
_VERSION_KEY = re.compile(r"^[1-9][0-9]*$")
_ENTRY_KEYS = frozenset({"version", "code_hash", "hash_version", "older_versions"})


class ManifestError(AuditError):
    """The manifest file exists but cannot be used (not JSON, or not the expected shape).

    ``path`` is the file. Fix the file by hand (the message says where), or delete it
    and re-create it with ``durableflow audit app.module:flow --update``.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"malformed manifest {path}: {problem}; fix it, or delete it and run "
            "`durableflow audit <module>:<flow> --update` to write it again"
        )
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class ManifestEntry:
    """What the manifest records for one workflow name.

    ``version`` and ``code_hash`` are those of the highest registered version;
    ``older_versions`` maps each older version still registered to its code hash.
    """

    version: int
    code_hash: str
    hash_version: int = HASH_VERSION
    older_versions: Mapping[int, str] = field(default_factory=dict)

    def hash_of(self, version: int) -> str | None:
        """The recorded code hash of ``version`` of this workflow, if recorded."""
        if version == self.version:
            return self.code_hash
        return self.older_versions.get(version)

    def to_json(self) -> dict[str, Any]:
        """The entry as written to the file."""
        data: dict[str, Any] = {
            "code_hash": self.code_hash,
            "hash_version": self.hash_version,
            "version": self.version,
        }
        if self.older_versions:
            data["older_versions"] = {
                str(version): self.older_versions[version]
                for version in sorted(self.older_versions)
            }
        return data


@dataclass(frozen=True)
class Manifest:
    """Every workflow name with its ``ManifestEntry``."""

    workflows: Mapping[str, ManifestEntry]

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object, workflow names sorted."""
        return {name: self.workflows[name].to_json() for name in sorted(self.workflows)}

    def render(self) -> str:
        """The file's text: sorted keys, indent 2, trailing newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def manifest_from_registry(registry: Registry) -> Manifest:
    """The manifest describing the workflows registered now, with freshly computed hashes.

    Hashes are always recomputed here (never read from ``definition.code_hash``), so the
    audit does not depend on when the Flow filled them in.
    """
    by_name: dict[str, dict[int, str]] = {}
    for definition in registry.workflows:
        if definition.extra.get(PUBLISHED_KEY):
            continue  # a published graph: data, versioned by the graphs table
        hashes = by_name.setdefault(definition.name, {})
        hashes[definition.version] = compute_code_hash(definition, registry)
    workflows: dict[str, ManifestEntry] = {}
    for name, hashes in by_name.items():
        highest = max(hashes)
        workflows[name] = ManifestEntry(
            version=highest,
            code_hash=hashes[highest],
            hash_version=HASH_VERSION,
            older_versions={v: h for v, h in sorted(hashes.items()) if v != highest},
        )
    return Manifest(workflows)


def find_manifest_path(start: Path | None = None) -> Path:
    """``durableflow.lock.json`` next to the nearest ``pyproject.toml`` at or above ``start``.

    ``start`` defaults to the current directory; without any ``pyproject.toml`` above
    it, the manifest goes in ``start`` itself.
    """
    origin = (start or Path.cwd()).resolve()
    for directory in (origin, *origin.parents):
        if (directory / "pyproject.toml").is_file():
            return directory / MANIFEST_FILENAME
    return origin / MANIFEST_FILENAME


def read_manifest(path: Path) -> Manifest | None:
    """The manifest at ``path``, or None when there is no such file.

    Raises ``ManifestError`` when the file is unreadable, not JSON, or not a manifest.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ManifestError(path, f"it is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ManifestError(path, f"it cannot be read ({exc.strerror or exc})") from exc
    return parse_manifest(text, path=path)


def parse_manifest(text: str, *, path: Path) -> Manifest:
    """Parse and validate manifest text; ``path`` only names the file in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            path, f"it is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(data, dict):
        raise ManifestError(
            path, f"the top level must be an object of workflow names, not {_kind(data)}"
        )
    return Manifest({name: _parse_entry(path, name, entry) for name, entry in data.items()})


def _parse_entry(path: Path, name: str, entry: object) -> ManifestEntry:
    where = f"entry {name!r}"
    if not isinstance(entry, dict):
        raise ManifestError(path, f"{where} must be an object, not {_kind(entry)}")
    missing = sorted({"version", "code_hash", "hash_version"} - entry.keys())
    if missing:
        raise ManifestError(path, f"{where} lacks {', '.join(missing)}")
    unknown = sorted(entry.keys() - _ENTRY_KEYS)
    if unknown:
        raise ManifestError(
            path,
            f"{where} has unknown key(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(_ENTRY_KEYS))})",
        )
    version = _positive_int(path, f"{where}: version", entry["version"])
    hash_version = _positive_int(path, f"{where}: hash_version", entry["hash_version"])
    code_hash = _code_hash(path, f"{where}: code_hash", entry["code_hash"])
    older_raw = entry.get("older_versions", {})
    if not isinstance(older_raw, dict):
        raise ManifestError(path, f"{where}: older_versions must be an object")
    older: dict[int, str] = {}
    for key, value in older_raw.items():
        if not _VERSION_KEY.fullmatch(key):
            raise ManifestError(
                path, f"{where}: older_versions key {key!r} is not a version number"
            )
        if int(key) >= version:
            raise ManifestError(
                path, f"{where}: older version {key} is not below version {version}"
            )
        older[int(key)] = _code_hash(path, f"{where}: older_versions[{key}]", value)
    return ManifestEntry(version, code_hash, hash_version, older)


def _positive_int(path: Path, what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ManifestError(path, f"{what} must be an integer >= 1, not {value!r}")
    return value


def _code_hash(path: Path, what: str, value: object) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise ManifestError(path, f"{what} must be 64 lower-case hex digits, not {value!r}")
    return value


def _kind(value: object) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def write_manifest(path: Path, manifest: Manifest) -> bool:
    """Write ``manifest`` to ``path`` atomically; False (and no write) if already identical."""
    text = manifest.render()
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: write it
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    # Write-then-rename so a crash never leaves half a manifest behind.
    temporary: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            temporary = handle.name
            handle.write(text)
        os.chmod(temporary, mode)  # NamedTemporaryFile creates it 0600
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise AuditError(f"cannot write the manifest {path}: {exc.strerror or exc}") from exc
    return True
