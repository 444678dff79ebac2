"""The shipped conformance suite over the memory and filesystem providers.

The S3 provider runs the same suite in tests/integration/storage against moto.
"""

from __future__ import annotations

import pytest

from durableflow.storage import StorageProtocol
from durableflow.testing import StorageConformanceSuite, StorageHarness


class TestMemoryConformance(StorageConformanceSuite):
    @pytest.fixture
    def storage_harness(self, memory_harness: StorageHarness) -> StorageHarness:
        return memory_harness


class TestFilesystemConformance(StorageConformanceSuite):
    @pytest.fixture
    def storage_harness(self, fs_harness: StorageHarness) -> StorageHarness:
        return fs_harness


def test_providers_satisfy_the_protocol(
    memory_harness: StorageHarness, fs_harness: StorageHarness
) -> None:
    assert isinstance(memory_harness.provider, StorageProtocol)
    assert isinstance(fs_harness.provider, StorageProtocol)


def test_suite_holds_one_test_per_check() -> None:
    from durableflow.testing import CONFORMANCE_CHECKS

    tests = [name for name in dir(StorageConformanceSuite) if name.startswith("test_")]
    assert len(tests) == len(CONFORMANCE_CHECKS) >= 15
