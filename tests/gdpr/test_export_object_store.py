"""Exports in an S3-compatible object store (#13 point 1): web and workers share no disk, so the worker
writes the archive to the bucket, the download answers 302 to a presigned URL of it, the purge deletes it.
The store is a real server (moto's server mode) reached over HTTP, like a cloud bucket."""

import io
import time
import uuid
import zipfile
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client
from django.utils import timezone

from gdpr.models import DataSubjectRequest, RequestStatus
from gdpr.services import exports_purge
from payments_project.celery import app
from tests.support.auth import bearer
from tests.support.s3 import S3Server
from tests.support.worker import celery_worker, wait_until

ALICE = uuid.UUID("0190f1a2-7c4e-7d11-8a00-0000000013a1")
MALLORY = uuid.UUID("0190f1a2-7c4e-7d11-8a00-0000000013a2")
EXPORTS = "/api/v1/gdpr/exports"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_writes_the_export_to_the_bucket_and_its_owner_downloads_it_through_a_presigned_url(
    s3_export_storage: S3Server,
) -> None:
    client = Client()
    with celery_worker(["gdpr"]):
        created = client.post(EXPORTS, content_type="application/json", HTTP_AUTHORIZATION=bearer(ALICE))
        assert created.status_code == 202
        request_id = created.json()["id"]

        def completed() -> bool:
            return DataSubjectRequest.objects.get(id=request_id).status == RequestStatus.COMPLETED

        assert wait_until(completed, timeout=60)

    assert s3_export_storage.keys() == [f"{request_id}.zip"]  # written by the worker, into the bucket
    download = f"{EXPORTS}/{request_id}/download"
    assert client.get(download, HTTP_AUTHORIZATION=bearer(MALLORY)).status_code == 404
    signed_at = time.time()
    response = client.get(download, HTTP_AUTHORIZATION=bearer(ALICE))

    assert response.status_code == 302
    assert response["Cache-Control"] == "private, no-store"
    location = response["Location"]
    assert location.startswith(f"{s3_export_storage.endpoint_url}/{s3_export_storage.bucket}/{request_id}.zip?")
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == ["60"]  # GDPR_EXPORT_URL_TTL_SECONDS
    signed = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")) - time.timezone
    assert abs(signed - signed_at) < 5
    assert "X-Amz-Signature" in query and "X-Amz-Credential" in query
    fetched = requests.get(location, timeout=10)  # plain HTTP, no credentials of ours
    assert fetched.status_code == 200
    assert fetched.headers["Content-Disposition"].startswith('attachment; filename="jia-payments-data-')
    with zipfile.ZipFile(io.BytesIO(fetched.content)) as archive:
        assert "data.json" in archive.namelist()


@pytest.mark.django_db(transaction=True)
def test_the_purge_deletes_expired_objects_from_the_bucket_and_the_download_answers_410(
    s3_export_storage: S3Server,
) -> None:
    client = Client()
    with celery_worker(["gdpr"]):
        expired, current = (
            client.post(EXPORTS, content_type="application/json", HTTP_AUTHORIZATION=bearer(user)).json()["id"]
            for user in (ALICE, MALLORY)
        )
        assert wait_until(lambda: DataSubjectRequest.objects.filter(status=RequestStatus.COMPLETED).count() == 2)
        assert s3_export_storage.keys() == sorted([f"{expired}.zip", f"{current}.zip"])
        DataSubjectRequest.objects.filter(id=expired).update(expires_at=timezone.now() - timedelta(minutes=1))

        app.send_task("gdpr.purge_exports")  # the beat job, as beat sends it

        assert wait_until(lambda: s3_export_storage.keys() == [f"{current}.zip"])

    assert DataSubjectRequest.objects.get(id=expired).status == RequestStatus.EXPIRED
    assert client.get(f"{EXPORTS}/{expired}/download", HTTP_AUTHORIZATION=bearer(ALICE)).status_code == 410
    assert exports_purge() == 0
