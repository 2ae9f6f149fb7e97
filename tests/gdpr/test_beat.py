"""The beat jobs: requests nobody picked up, expired export files, the 25-day alert, raw webhook bodies."""

import json
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

from gdpr.audit import ActorType, AuditAction, pending_count, record, verify_chain
from gdpr.models import AuditEvent, DataSubjectRequest, RequestKind, RequestStatus
from gdpr.services import (
    data_request_cancel,
    data_request_create,
    data_requests_alert_overdue,
    data_requests_sweep,
    exports_purge,
)
from payments_project.celery import app
from tasks.models import OutboxMessage
from tasks.outbox import outbox_dispatch_pending
from tests.billing.factories import CustomerFactory
from tests.gdpr.support import run_to_the_end
from tests.support.auth import bearer
from tests.support.stripe_events import inbox_event
from tests.support.worker import celery_worker, purge, wait_until
from webhooks.models import WebhookEvent
from webhooks.services import webhook_payloads_purge

ALICE = uuid.uuid4()


def _export(user_id: uuid.UUID = ALICE) -> DataSubjectRequest:
    created, _ = data_request_create(kind=RequestKind.EXPORT, user_id=user_id, email="")
    return created


def test_the_beat_schedule_runs_each_job_on_its_queue() -> None:
    app.loader.import_default_modules()  # what a worker does at start: every app's tasks module
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}

    assert {"gdpr.sweep", "gdpr.purge_exports", "gdpr.alert_overdue", "gdpr.audit_seal"} <= scheduled
    assert "webhooks.purge_raw_payloads" in scheduled
    for name in ("gdpr.sweep", "gdpr.purge_exports", "gdpr.alert_overdue", "gdpr.export_process", "gdpr.audit_seal"):
        assert app.tasks[name].queue == "gdpr"
    assert app.tasks["webhooks.purge_raw_payloads"].queue == "webhooks"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_sweeper_runs_requests_nobody_picked_up_and_those_of_a_dead_worker(export_storage: Path) -> None:
    missed, fresh, abandoned = _export(uuid.uuid4()), _export(uuid.uuid4()), _export(uuid.uuid4())
    purge(["gdpr"])  # their messages are lost (a broker outage, a crash before the send)
    long_ago = timezone.now() - timedelta(hours=1)
    DataSubjectRequest.objects.filter(id=missed.id).update(next_attempt_at=long_ago)
    DataSubjectRequest.objects.filter(id=abandoned.id).update(status=RequestStatus.RUNNING, lease_until=long_ago)

    with celery_worker(["gdpr"]):
        assert data_requests_sweep() == 2
        assert wait_until(
            lambda: (
                DataSubjectRequest.objects.filter(id__in=[missed.id, abandoned.id], status="completed").count() == 2
            ),
            timeout=60,
        )

    assert DataSubjectRequest.objects.get(id=fresh.id).status == RequestStatus.PENDING  # its nudge may still come
    assert DataSubjectRequest.objects.get(id=abandoned.id).attempts == 1  # counted once, when it was re-run


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_audit_sealer_on_a_worker_chains_what_was_appended() -> None:
    for n in range(3):
        with transaction.atomic():
            record(action=AuditAction.ORDER_CREATED, actor_type=ActorType.SYSTEM, target_id=f"order-{n}")
    assert (pending_count(), verify_chain()) == (3, (0, None))

    with celery_worker(["gdpr"]):
        app.send_task("gdpr.audit_seal")  # what beat sends every 5 s
        assert wait_until(lambda: pending_count() == 0, timeout=60)

    assert verify_chain() == (3, None)
    assert list(AuditEvent.objects.order_by("seq").values_list("target_id", flat=True)) == [
        "order-0",
        "order-1",
        "order-2",
    ]


@pytest.mark.django_db
def test_expired_and_withdrawn_export_files_are_deleted(export_storage: Path) -> None:
    expired, withdrawn, current = (run_to_the_end(_export(uuid.uuid4()).id) for _ in range(3))
    DataSubjectRequest.objects.filter(id=expired.id).update(expires_at=timezone.now() - timedelta(minutes=1))
    data_request_cancel(request_id=withdrawn.id, staff_id="7")

    assert exports_purge() == 2

    assert sorted(path.name for path in export_storage.iterdir()) == [current.file_name]
    expired.refresh_from_db()
    assert (expired.status, expired.file_name) == (RequestStatus.EXPIRED, "")
    assert DataSubjectRequest.objects.get(id=withdrawn.id).status == RequestStatus.CANCELED
    assert AuditEvent.objects.filter(action="gdpr.export.expired", target_id=str(expired.id)).count() == 1
    response = Client().get(f"/api/v1/gdpr/exports/{expired.id}/download", HTTP_AUTHORIZATION=bearer(expired.user_id))
    assert response.status_code == 410
    assert exports_purge() == 0


@pytest.mark.django_db
def test_requests_open_for_25_days_raise_an_alert_with_a_metric_and_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = timezone.now()
    late = _export(uuid.uuid4())
    erasure, _ = data_request_create(kind=RequestKind.ERASURE, user_id=uuid.uuid4(), email="")
    in_time, finished = _export(uuid.uuid4()), _export(uuid.uuid4())
    DataSubjectRequest.objects.filter(id__in=[late.id, erasure.id]).update(created_at=now - timedelta(days=26))
    DataSubjectRequest.objects.filter(id=in_time.id).update(created_at=now - timedelta(days=24))
    DataSubjectRequest.objects.filter(id=finished.id).update(
        created_at=now - timedelta(days=40), status=RequestStatus.COMPLETED
    )
    DataSubjectRequest.objects.filter(id=erasure.id).update(status=RequestStatus.FAILED)

    with caplog.at_level(logging.ERROR):
        assert data_requests_alert_overdue() == 2

    assert REGISTRY.get_sample_value("payments_gdpr_requests_overdue", {"kind": "export"}) == 1
    assert REGISTRY.get_sample_value("payments_gdpr_requests_overdue", {"kind": "erasure"}) == 1
    alert = next(record for record in caplog.records if "gdpr_requests_overdue" in record.getMessage())
    assert alert.levelno == logging.ERROR
    assert str(late.id) in alert.getMessage() and str(in_time.id) not in alert.getMessage()

    DataSubjectRequest.objects.update(status=RequestStatus.COMPLETED)
    assert data_requests_alert_overdue() == 0
    assert REGISTRY.get_sample_value("payments_gdpr_requests_overdue", {"kind": "erasure"}) == 0


@pytest.mark.django_db
def test_the_user_id_leaves_the_erasure_event_only_once_it_is_published() -> None:
    erasure, _ = data_request_create(kind=RequestKind.ERASURE, user_id=ALICE, email="")
    done = run_to_the_end(erasure.id)
    OutboxMessage.objects.filter(type="gdpr.erasure.completed").update(
        status=OutboxMessage.Status.PENDING, published_at=None
    )

    data_requests_sweep()
    assert OutboxMessage.objects.get(type="gdpr.erasure.completed").data["user_id"] == str(ALICE)  # not sent yet

    outbox_dispatch_pending()
    data_requests_sweep()
    message = OutboxMessage.objects.get(type="gdpr.erasure.completed")
    assert message.data == {
        "request_id": str(done.id),
        "user_id": None,
        "pseudonym": done.subject,
        "completed_at": message.data["completed_at"],
    }
    done.refresh_from_db()
    assert done.completion_event_redacted_at is not None


def _event(*, days_old: int, status: str, customer_id: str = "cus_someone") -> WebhookEvent:
    customer = {"id": customer_id, "object": "customer", "email": "someone@example.com"}
    received = timezone.now() - timedelta(days=days_old)
    return inbox_event("customer.updated", customer, status=status, customer_id=customer_id, received_at=received)


@pytest.mark.django_db
def test_raw_webhook_bodies_are_redacted_after_the_retention_period_once_processed(settings: Any) -> None:
    settings.WEBHOOK_PAYLOAD_RETENTION_DAYS = 30
    old_processed = _event(days_old=31, status="processed")
    old_ignored = _event(days_old=31, status="ignored")
    old_unprocessed = _event(days_old=31, status="failed")
    old_dead = _event(days_old=31, status="dead")
    recent = _event(days_old=29, status="processed")
    CustomerFactory(stripe_customer_id="cus_gone", stripe_deleted_at=timezone.now())
    recent_of_a_deleted_customer = _event(days_old=1, status="processed", customer_id="cus_gone")

    assert webhook_payloads_purge() == 3

    for event in (old_processed, old_ignored, recent_of_a_deleted_customer):
        stored = WebhookEvent.objects.get(id=event.id)
        redacted = json.loads(stored.raw_body)
        assert redacted["jia_redacted"] == "retention"
        assert (redacted["id"], redacted["type"], redacted["data"]["object"]["id"]) == (
            event.event_id,
            event.type,
            event.object_id,
        )
        assert "someone@example.com" not in stored.raw_body
        assert stored.event_id == event.event_id  # the row stays: it deduplicates redeliveries
    for event in (old_unprocessed, old_dead, recent):
        assert WebhookEvent.objects.get(id=event.id).raw_body == event.raw_body
    assert webhook_payloads_purge() == 0
