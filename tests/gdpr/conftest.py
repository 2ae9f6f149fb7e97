"""gdpr's fixtures: a private export storage that the test process and its worker subprocesses share,
and quick retries."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


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
def quick_retries(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff of a second or two, here and in workers."""
    settings.GDPR_RETRY_BASE_SECONDS = 1
    settings.GDPR_RETRY_MAX_SECONDS = 2
    monkeypatch.setenv("GDPR_RETRY_BASE_SECONDS", "1")
    monkeypatch.setenv("GDPR_RETRY_MAX_SECONDS", "2")
