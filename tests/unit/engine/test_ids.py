import time

from durableflow.engine.ids import uuid7


def test_uuid7_has_version_7_variant_rfc_and_sorts_by_time() -> None:
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    assert first.version == 7
    assert first.variant == "specified in RFC 4122"
    assert first < second
    assert len({uuid7() for _ in range(10_000)}) == 10_000
