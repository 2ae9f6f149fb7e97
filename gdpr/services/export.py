"""Exports: build the archive, hand it to its owner, purge it after its window."""

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import IO

import structlog
from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from gdpr.archive import build_archive
from gdpr.audit import ActorType, AuditAction
from gdpr.errors import ExportExpired, ExportNotReady
from gdpr.models import DataSubjectRequest, RequestKind, RequestStatus
from gdpr.registry import Tables, providers
from gdpr.selectors import data_request_get_for_user
from gdpr.services._shared import (
    REQUESTS_TOTAL,
    Outcome,
    data_subject_of,
    request_audit,
    request_claim,
    request_record_failure,
)
from tasks.jobs import error_text, outcome_fields
from tasks.outbox import emit

log = structlog.get_logger(__name__)


EXPORT_STORAGE = "gdpr_exports"  # the STORAGES alias of export archives (settings: GDPR section)


def _export_storage() -> Storage:
    return storages[EXPORT_STORAGE]


def export_process(*, request_id: uuid.UUID) -> Outcome | None:
    """Gather every provider's data into the archive, store it, and mark the export completed.

    None when the request was not this worker's to run. On a transient error the request waits for a
    retry (Outcome.retry_in); out of attempts, or on any other error, it is failed with the reason.
    """
    data_request = request_claim(request_id, RequestKind.EXPORT)
    if data_request is None:
        return None
    try:
        subject = data_subject_of(data_request)
        tables: Tables = {}
        for provider in providers():
            for table, table_rows in provider.export(subject=subject).items():
                tables[f"{provider.name}.{table}"] = table_rows
        archive = build_archive(
            tables=tables,
            manifest={
                "request_id": str(data_request.id),
                "user_id": str(subject.user_id),
                "generated_at": timezone.now(),
            },
        )
        name = f"{data_request.id}.zip"
        storage = _export_storage()
        storage.delete(name)  # a rerun after a crash replaces its own file, never piles up copies
        try:
            stored = storage.save(name, File(archive.file, name=name))
        finally:
            archive.file.close()
    except Exception as exc:
        log.warning("gdpr_export_failed", request_id=str(request_id), error=error_text(exc))
        return _export_record_failure(request_id=request_id, exc=exc)
    counts = {table: len(table_rows) for table, table_rows in tables.items()}
    return _export_record_success(
        request_id=request_id, file_name=stored, size=archive.size, sha256=archive.sha256, counts=counts
    )


@transaction.atomic(durable=True)
def _export_record_success(
    *, request_id: uuid.UUID, file_name: str, size: int, sha256: str, counts: Mapping[str, int]
) -> Outcome:
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    if data_request.status != RequestStatus.RUNNING:  # canceled meanwhile: the file must not stay
        transaction.on_commit(lambda: _export_storage().delete(file_name))
        return Outcome(status=data_request.status)
    now = timezone.now()
    data_request.status, data_request.completed_at, data_request.lease_until = RequestStatus.COMPLETED, now, None
    data_request.file_name, data_request.file_size, data_request.file_sha256 = file_name, size, sha256
    data_request.expires_at = now + timedelta(hours=settings.GDPR_EXPORT_TTL_HOURS)
    data_request.last_error, data_request.updated_at = "", now
    data_request.save(
        update_fields=[
            *outcome_fields(DataSubjectRequest),
            "completed_at",
            "file_name",
            "file_size",
            "file_sha256",
            "expires_at",
            "updated_at",
        ]
    )
    request_audit(AuditAction.GDPR_EXPORT_COMPLETED, data_request, metadata={"rows": dict(counts), "bytes": size})
    emit(
        "gdpr.export.ready",
        f"gdpr_request:{data_request.id}",
        {
            "request_id": str(data_request.id),
            "user_id": str(data_request.user_id),
            "expires_at": data_request.expires_at,
            "download_path": f"/api/v1/gdpr/exports/{data_request.id}/download",
        },
    )
    REQUESTS_TOTAL.labels(RequestKind.EXPORT, "completed").inc()
    log.info("gdpr_export_completed", request_id=str(request_id), bytes=size)
    return Outcome(status=data_request.status)


@transaction.atomic(durable=True)
def _export_record_failure(*, request_id: uuid.UUID, exc: BaseException) -> Outcome:
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    if data_request.status != RequestStatus.RUNNING:
        return Outcome(status=data_request.status)
    return request_record_failure(
        data_request,
        exc,
        attempts=data_request.attempts,
        error=error_text(exc),
        action=AuditAction.GDPR_EXPORT_FAILED,
        metadata={"error": type(exc).__name__},
    )


# --- Download ----------------------------------------------------------------------------------------------


def export_download(
    *, user_id: uuid.UUID, request_id: uuid.UUID, request: HttpRequest | None = None
) -> tuple[DataSubjectRequest, str | IO[bytes]]:
    """The caller's finished export, and where to get it: a presigned URL of the object store that lives
    GDPR_EXPORT_URL_TTL_SECONDS, or (local storage) the open archive. The download is audited.

    404 for anyone else's request, 409 while it is not finished, 410 once its window is over.
    """
    data_request = data_request_get_for_user(user_id=user_id, request_id=request_id, kind=RequestKind.EXPORT)
    expired = data_request.expires_at is not None and data_request.expires_at <= timezone.now()
    if data_request.status in (RequestStatus.EXPIRED, RequestStatus.CANCELED) or expired:
        raise ExportExpired("This export is no longer available; request a new one")
    if data_request.status != RequestStatus.COMPLETED:
        raise ExportNotReady(f"The export is {data_request.status}; try again when it is completed")
    archive: str | IO[bytes]
    try:
        archive = _export_location(data_request)
    except FileNotFoundError:
        log.error("gdpr_export_file_missing", request_id=str(request_id))
        raise ExportExpired("This export is no longer available; request a new one") from None
    try:
        _export_download_record(data_request=data_request, user_id=user_id, request=request)
    except BaseException:
        if not isinstance(archive, str):
            archive.close()
        raise
    return data_request, archive


def export_download_filename(data_request: DataSubjectRequest) -> str:
    stamp = (data_request.completed_at or data_request.created_at).strftime("%Y%m%d")
    return f"jia-payments-data-{stamp}.zip"


def _export_location(data_request: DataSubjectRequest) -> str | IO[bytes]:
    storage = _export_storage()
    name = data_request.file_name
    if isinstance(storage, FileSystemStorage):
        return storage.open(name, "rb")
    if not storage.exists(name):
        raise FileNotFoundError(name)
    # The object store serves the bytes itself, as an attachment, to whoever holds the URL until it expires.
    disposition = f'attachment; filename="{export_download_filename(data_request)}"'
    parameters = {"ResponseContentDisposition": disposition, "ResponseContentType": "application/zip"}
    url: str = storage.url(name, parameters=parameters, expire=settings.GDPR_EXPORT_URL_TTL_SECONDS)  # type: ignore[call-arg]
    return url


@transaction.atomic(durable=True)
def _export_download_record(
    *, data_request: DataSubjectRequest, user_id: uuid.UUID, request: HttpRequest | None
) -> None:
    request_audit(
        AuditAction.GDPR_EXPORT_DOWNLOADED,
        data_request,
        actor_type=ActorType.USER,
        actor_id=str(user_id),
        request=request,
    )


def exports_purge() -> int:
    """Delete export files past their download window (→ expired) or withdrawn; returns how many."""
    now = timezone.now()
    stale = (
        DataSubjectRequest.objects.filter(kind=RequestKind.EXPORT)
        .exclude(file_name="")
        .filter(
            Q(status=RequestStatus.COMPLETED, expires_at__lte=now)
            | Q(status__in=[RequestStatus.CANCELED, RequestStatus.FAILED, RequestStatus.EXPIRED])
        )
    )
    purged = 0
    for request_id, file_name in stale.values_list("id", "file_name")[:1000]:
        _export_storage().delete(file_name)  # outside any transaction: it may be an object store
        purged += _export_file_forget(request_id=request_id, file_name=file_name)
    return purged


@transaction.atomic(durable=True)
def _export_file_forget(*, request_id: uuid.UUID, file_name: str) -> int:
    data_request = DataSubjectRequest.objects.select_for_update().filter(id=request_id, file_name=file_name).first()
    if data_request is None:
        return 0
    expiring = data_request.status == RequestStatus.COMPLETED
    data_request.file_name, data_request.updated_at = "", timezone.now()
    if expiring:
        data_request.status = RequestStatus.EXPIRED
    data_request.save(update_fields=["file_name", "updated_at", "status"])
    if expiring:
        request_audit(AuditAction.GDPR_EXPORT_EXPIRED, data_request)
    return 1
