"""gdpr's fixtures: a private export storage that the test process and its worker subprocesses share,
and quick retries."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gdpr.models import DataSubjectRequest
from tests.gdpr.quick_retries import QUICK_RETRIES


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
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> str:
    """Backoff of a second or two here; for a worker, pass what it returns as celery_worker's `include`."""
    monkeypatch.setattr(DataSubjectRequest, "retry_policy", QUICK_RETRIES)
    return "tests.gdpr.quick_retries"
