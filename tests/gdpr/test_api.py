"""The client API of GDPR requests: accepted with an id, one open request per kind, owner only, problem+json
for everything else."""

import io
import json
import uuid
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from gdpr.models import AuditEvent, DataSubjectRequest, RequestKind, RequestStatus
from gdpr.registry import pseudonym_for
from payments_project.celery import app
from tasks.base import sends_flush
from tests.gdpr.support import run_to_the_end
from tests.support.auth import bearer
from tests.support.worker import purge

pytestmark = pytest.mark.django_db

ALICE, BOB, CAROL = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
EXPORTS, ERASURE = "/api/v1/gdpr/exports", "/api/v1/gdpr/erasure"


def _post(client: Client, path: str, user_id: uuid.UUID = ALICE, body: str = "", **extra: Any) -> Any:
    extra.setdefault("content_type", "application/json")
    return client.post(path, body, HTTP_AUTHORIZATION=bearer(user_id, f"{user_id.hex[:6]}@example.com"), **extra)


def _get(client: Client, path: str, user_id: uuid.UUID = ALICE) -> Any:
    return client.get(path, HTTP_AUTHORIZATION=bearer(user_id))


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:jia:payments:problem:{code}"
    return body


def _queued(queue: str) -> list[tuple[str, list[Any]]]:
    """The task messages waiting on a queue of the real broker (taken off it)."""
    sends_flush()  # tasks enqueued on commit are sent off the request's thread
    found = []
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            found.append((message.headers["task"], json.loads(message.body)[0]))
    return found


def test_an_export_is_accepted_once_and_a_second_request_gets_the_open_one(
    client: Client, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    purge(["gdpr"])

    with django_capture_on_commit_callbacks(execute=True):
        first = _post(client, EXPORTS)
    with django_capture_on_commit_callbacks(execute=True):
        second = _post(client, EXPORTS)

    assert (first.status_code, second.status_code) == (202, 202)
    body = first.json()
    assert body == {
        "id": body["id"],
        "kind": "export",
        "status": "pending",
        "created_at": body["created_at"],
        "completed_at": None,
        "expires_at": None,
        "download_url": None,
    }
    assert first["Location"] == f"{EXPORTS}/{body['id']}"
    assert second.json()["id"] == body["id"]
    assert DataSubjectRequest.objects.count() == 1
    assert AuditEvent.objects.filter(action="gdpr.export.requested", actor_id=pseudonym_for(ALICE)).count() == 1
    assert _queued("gdpr") == [("gdpr.export_process", [body["id"]])]  # one job, not two


def test_an_erasure_is_accepted_and_polled_by_its_owner(client: Client) -> None:
    response = _post(client, ERASURE)

    assert response.status_code == 202
    request_id = response.json()["id"]
    assert response["Location"] == f"{ERASURE}/{request_id}"
    assert _get(client, f"{ERASURE}/{request_id}").json()["status"] == "pending"
    assert AuditEvent.objects.filter(action="gdpr.erasure.requested", target_id=request_id).count() == 1


def test_someone_elses_request_is_a_404_everywhere(client: Client, export_storage: Path) -> None:
    export = _post(client, EXPORTS).json()["id"]
    run_to_the_end(uuid.UUID(export))
    erasure = _post(client, ERASURE, user_id=BOB).json()["id"]

    for path, outsider in (
        (f"{EXPORTS}/{export}", CAROL),
        (f"{EXPORTS}/{export}/download", CAROL),
        (f"{ERASURE}/{erasure}", ALICE),
        (f"{EXPORTS}/{erasure}", BOB),  # an erasure is not an export, even for its owner
        (f"{EXPORTS}/{uuid.uuid4()}", ALICE),
        (f"{EXPORTS}/not-a-uuid", ALICE),
    ):
        assert _get(client, path, outsider).status_code == 404, path
        assert _get(client, path, outsider)["Content-Type"] == "application/problem+json"
    assert _get(client, f"{EXPORTS}/{export}/download").status_code == 200  # the owner's works
    assert (
        not AuditEvent.objects.filter(action="gdpr.export.downloaded").exclude(actor_id=pseudonym_for(ALICE)).exists()
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ('{"reason": "please"}', "application/json", 400, "validation_error"),
        ("[1, 2]", "application/json", 400, "validation_error"),
        ("{not json", "application/json", 400, "parse_error"),
        ("reason=please", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
@pytest.mark.parametrize("path", [EXPORTS, ERASURE])
def test_bad_input_is_refused_with_a_problem_and_nothing_is_created(
    client: Client, path: str, body: str, content_type: str, status: int, code: str
) -> None:
    response = _post(client, path, body=body, content_type=content_type)

    _problem(response, status, code)
    assert not DataSubjectRequest.objects.exists()
    assert not AuditEvent.objects.exists()


def test_an_empty_object_body_is_fine(client: Client) -> None:
    assert _post(client, EXPORTS, body="{}").status_code == 202


def test_without_a_token_every_endpoint_is_401(client: Client) -> None:
    some = uuid.uuid4()
    for method, path in (
        ("post", EXPORTS),
        ("get", f"{EXPORTS}/{some}"),
        ("get", f"{EXPORTS}/{some}/download"),
        ("post", ERASURE),
        ("get", f"{ERASURE}/{some}"),
    ):
        response = getattr(client, method)(path)
        _problem(response, 401, "not_authenticated")
    assert not DataSubjectRequest.objects.exists()


def test_the_download_is_409_until_ready_then_the_zip_and_410_once_expired(
    client: Client, export_storage: Path
) -> None:
    request_id = _post(client, EXPORTS).json()["id"]
    download = f"{EXPORTS}/{request_id}/download"

    _problem(_get(client, download), 409, "export_not_ready")
    run_to_the_end(uuid.UUID(request_id))
    ready = _get(client, download, ALICE)
    assert ready.status_code == 200
    assert ready["Cache-Control"] == "private, no-store"
    with zipfile.ZipFile(io.BytesIO(b"".join(ready.streaming_content))) as archive:
        assert "data.json" in archive.namelist()
    polled = _get(client, f"{EXPORTS}/{request_id}").json()
    assert polled["expires_at"] is not None

    DataSubjectRequest.objects.filter(id=request_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    _problem(_get(client, download), 410, "export_expired")
    assert AuditEvent.objects.filter(action="gdpr.export.downloaded", target_id=request_id).count() == 1


def test_a_missing_archive_is_410_not_a_crash(client: Client, export_storage: Path) -> None:
    request_id = _post(client, EXPORTS).json()["id"]
    done = run_to_the_end(uuid.UUID(request_id))
    (export_storage / done.file_name).unlink()

    _problem(_get(client, f"{EXPORTS}/{request_id}/download"), 410, "export_expired")
    assert not AuditEvent.objects.filter(action="gdpr.export.downloaded").exists()


def test_an_export_is_refused_while_an_erasure_is_open(client: Client) -> None:
    _post(client, ERASURE)

    _problem(_post(client, EXPORTS), 409, "erasure_in_progress")
    assert not DataSubjectRequest.objects.filter(kind=RequestKind.EXPORT).exists()


def test_a_new_export_may_follow_a_finished_one(client: Client, export_storage: Path) -> None:
    first = _post(client, EXPORTS).json()["id"]
    assert run_to_the_end(uuid.UUID(first)).status == RequestStatus.COMPLETED

    second = _post(client, EXPORTS)

    assert second.status_code == 202
    assert second.json()["id"] != first


def test_gdpr_requests_are_rate_limited_per_user(client: Client, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "gdpr": "2/h"}

    answers = [_post(client, EXPORTS).status_code for _ in range(2)]
    limited = _post(client, ERASURE)

    assert answers == [202, 202]
    _problem(limited, 429, "rate_limited")
    assert int(limited["Retry-After"]) > 0
    assert _post(client, ERASURE, user_id=BOB).status_code == 202  # someone else is not limited by Alice


def test_the_openapi_schema_describes_the_gdpr_endpoints(client: Client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    assert {
        "/api/v1/gdpr/exports",
        "/api/v1/gdpr/exports/{request_id}",
        "/api/v1/gdpr/exports/{request_id}/download",
        "/api/v1/gdpr/erasure",
        "/api/v1/gdpr/erasure/{request_id}",
    } <= set(schema["paths"])
    download = schema["paths"]["/api/v1/gdpr/exports/{request_id}/download"]["get"]["responses"]["200"]
    assert "application/zip" in download["content"]
