"""Helpers for testing code built on durableflow, shipped with the library.

- ``durableflow.testing.storage_conformance``: the conformance suite every
  ``StorageProtocol`` provider must pass (``StorageConformanceSuite`` for pytest,
  ``run_storage_conformance`` without it).
"""

from durableflow.testing.storage_conformance import (
    CONFORMANCE_CHECKS,
    StorageConformanceSuite,
    StorageHarness,
    run_storage_conformance,
)

__all__ = [
    "CONFORMANCE_CHECKS",
    "StorageConformanceSuite",
    "StorageHarness",
    "run_storage_conformance",
]
