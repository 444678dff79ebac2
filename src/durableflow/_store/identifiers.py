"""The one place a schema name becomes SQL: validated, then double-quoted."""

from __future__ import annotations

import hashlib

from durableflow.config import validate_schema_name


def quote_schema(schema: str) -> str:
    """``"schema"`` for SQL text, after checking the name against the schema rule."""
    return f'"{validate_schema_name(schema)}"'


def advisory_key(schema: str, purpose: str) -> int:
    """A signed 64-bit advisory-lock key derived from the schema name and a purpose.

    Derived, not fixed, so two durableflow installs in one database never share a lock.
    """
    digest = hashlib.blake2b(f"durableflow:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
