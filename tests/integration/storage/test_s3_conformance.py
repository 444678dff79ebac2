"""The shipped conformance suite over the S3 provider, against moto's real HTTP server.

The memory and filesystem providers run the same suite in tests/unit/storage.
"""

from __future__ import annotations

import pytest

from durableflow.testing import StorageConformanceSuite, StorageHarness


class TestS3Conformance(StorageConformanceSuite):
    @pytest.fixture
    def storage_harness(self, s3_harness: StorageHarness) -> StorageHarness:
        return s3_harness
