"""Storage for the artefact tests: a folder, or a prefix in moto's S3 bucket.

``storage_url`` is parametrised over both where a test asks for it; ``file_storage_url``
is the folder only, for tests about the engine rather than the provider.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from _moto import ACCESS_KEY, BUCKET, REGION, SECRET_KEY


@pytest.fixture
def file_storage_url(tmp_path: Path) -> str:
    return f"file://{tmp_path}/artefacts"


@pytest.fixture(params=["file", "s3"])
def storage_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """``file://<tmp>/artefacts``, or ``s3://<bucket>/<unique prefix>`` on moto."""
    if request.param == "file":
        return f"file://{tmp_path}/artefacts"
    endpoint = request.getfixturevalue("moto_endpoint")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    prefix = f"artefact-tests/{uuid.uuid4().hex}"
    return f"s3://{BUCKET}/{prefix}?endpoint={quote(endpoint, safe='')}&region={REGION}"
