"""Compliance staff see every GDPR request with its steps, status and reason, and retry or cancel them."""

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from gdpr.models import AuditEvent, DataSubjectRequest, ErasureStep, RequestKind, RequestStatus, StepStatus
from gdpr.services import data_request_create
from payments_project.roles import Role
from tests.support.auth import signed_in

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/gdpr/datasubjectrequest/"
ALICE = uuid.uuid4()


def _staff(username: str, *roles: Role) -> Client:
    user = User.objects.create_user(username, password="x" * 20, is_staff=True)
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role.value)[0])
    return signed_in(user)


def _failed_erasure(user_id: uuid.UUID = ALICE) -> DataSubjectRequest:
    erasure, _ = data_request_create(kind=RequestKind.ERASURE, user_id=user_id, email="alice@example.com")
    erasure.status, erasure.last_error = RequestStatus.FAILED, "billing: StripeRequestFailed: refused"
    erasure.save(update_fields=["status", "last_error"])
    ErasureStep.objects.create(request=erasure, provider="billing", order=10, status=StepStatus.FAILED, attempts=3)
    ErasureStep.objects.create(request=erasure, provider="entitlements", order=20)
    return erasure


def test_compliance_sees_requests_with_their_steps_status_and_reason() -> None:
    erasure = _failed_erasure()
    carla = _staff("carla", Role.COMPLIANCE)

    listing = carla.get(CHANGELIST)
    detail = carla.get(f"{CHANGELIST}{erasure.id}/change/")

    assert listing.status_code == 200
    assert str(erasure.id) in listing.content.decode()
    assert "billing: StripeRequestFailed: refused" in listing.content.decode()
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "entitlements" in page and "billing" in page  # the steps
    assert carla.get(f"{CHANGELIST}?status=failed&kind=erasure").status_code == 200


@pytest.mark.parametrize("role", [Role.FINANCE, Role.SUPPORT])
def test_other_roles_do_not_see_gdpr_requests(role: Role) -> None:
    erasure = _failed_erasure()
    staff = _staff("someone", role)

    assert staff.get(CHANGELIST).status_code == 403
    response = staff.post(CHANGELIST, {"action": "retry", "_selected_action": [str(erasure.id)]})
    assert response.status_code == 403
    assert DataSubjectRequest.objects.get(id=erasure.id).status == RequestStatus.FAILED


def test_retrying_a_failed_request_queues_it_again_and_is_audited(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    erasure = _failed_erasure()
    carla = _staff("carla", Role.COMPLIANCE)

    with django_capture_on_commit_callbacks() as sent:
        response = carla.post(CHANGELIST, {"action": "retry", "_selected_action": [str(erasure.id)]}, follow=True)

    assert response.status_code == 200
    erasure.refresh_from_db()
    assert (erasure.status, erasure.last_error) == (RequestStatus.PENDING, "")
    billing = ErasureStep.objects.get(request=erasure, provider="billing")
    assert (billing.status, billing.attempts) == (StepStatus.PENDING, 0)
    audit = AuditEvent.objects.get(action="gdpr.request.retried")
    assert (audit.actor_type, audit.actor_id, audit.target_id) == ("staff", str(User.objects.get().pk), str(erasure.id))
    assert len(sent) == 1  # the job, sent once the retry commits


def test_cancelling_is_audited_and_a_running_request_cannot_be_cancelled() -> None:
    erasure = _failed_erasure()
    running, _ = data_request_create(kind=RequestKind.EXPORT, user_id=uuid.uuid4(), email="")
    DataSubjectRequest.objects.filter(id=running.id).update(status=RequestStatus.RUNNING, lease_until=timezone.now())
    carla = _staff("carla", Role.COMPLIANCE)

    carla.post(CHANGELIST, {"action": "cancel", "_selected_action": [str(erasure.id), str(running.id)]})

    assert DataSubjectRequest.objects.get(id=erasure.id).status == RequestStatus.CANCELED
    assert DataSubjectRequest.objects.get(id=running.id).status == RequestStatus.RUNNING
    audit = AuditEvent.objects.get(action="gdpr.request.canceled")
    assert (audit.target_id, audit.metadata) == (str(erasure.id), {"kind": "erasure", "previous_status": "failed"})


def test_a_user_id_finds_that_users_requests_even_after_the_erasure_removed_it() -> None:
    erasure = _failed_erasure()
    DataSubjectRequest.objects.filter(id=erasure.id).update(user_id=None, status=RequestStatus.COMPLETED)
    other = _failed_erasure(uuid.uuid4())
    carla = _staff("carla", Role.COMPLIANCE)

    page = carla.get(CHANGELIST, {"q": str(ALICE)}).content.decode()

    assert str(erasure.id) in page and str(other.id) not in page
