"""gdpr's fixtures: a private export storage that the test process and its worker subprocesses share,
and quick retries."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gdpr.models import DataSubjectRequest
from payments_project.settings.parsing import export_storage as export_storage_config
from tests.gdpr.quick_retries import QUICK_RETRIES
from tests.support.s3 import S3Server, s3_server


@pytest.fixture
def export_storage(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """STORAGES["gdpr_exports"] in a fresh folder, here and (through the environment) in workers."""
    folder = tmp_path / "exports"
    settings.STORAGES = {
        **settings.STORAGES,
        "gdpr_exports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    monkeypatch.setenv("GDPR_EXPORT_STORAGE_LOCATION", str(folder))
    yield folder


@pytest.fixture
def s3_export_storage(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """GDPR_EXPORT_STORAGE=s3 on a moto server of this test's own, here and (through the environment) in
    workers; presigned URLs live GDPR_EXPORT_URL_TTL_SECONDS=60."""
    with s3_server() as s3:
        for name, value in {**s3.env(), "GDPR_EXPORT_URL_TTL_SECONDS": "60"}.items():
            monkeypatch.setenv(name, value)
        settings.GDPR_EXPORT_STORAGE, settings.GDPR_EXPORT_URL_TTL_SECONDS = "s3", 60
        storage = export_storage_config(
            "s3", bucket=s3.bucket, endpoint_url=s3.endpoint_url, region="eu-central-1", url_ttl_seconds=60, location=""
        )
        settings.STORAGES = {**settings.STORAGES, "gdpr_exports": storage}
        yield s3


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> str:
    """Backoff of a second or two here; for a worker, pass what it returns as celery_worker's `include`."""
    monkeypatch.setattr(DataSubjectRequest, "retry_policy", QUICK_RETRIES)
    return "tests.gdpr.quick_retries"
