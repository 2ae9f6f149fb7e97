"""Reads of the gdpr app: data-subject requests as their owner or compliance staff sees them."""

import uuid
from collections.abc import Iterable
from datetime import datetime

from django.db.models import QuerySet

from gdpr.models import DataSubjectRequest, RequestKind, RequestStatus
from gdpr.registry import pseudonym_for
from payments_project.errors import NotFound

# Requests that are not done: what the overdue alert counts.
UNFINISHED = (RequestStatus.PENDING, RequestStatus.RUNNING, RequestStatus.FAILED)


def data_request_get_for_user(*, user_id: uuid.UUID, request_id: uuid.UUID, kind: RequestKind) -> DataSubjectRequest:
    """The caller's request of this kind; anyone else's (or none) is a 404.

    Owners are recognised by their pseudonym, which stays on the row after an erasure removed the id.
    """
    found = DataSubjectRequest.objects.filter(id=request_id, kind=kind, subject=pseudonym_for(user_id)).first()
    if found is None:
        raise NotFound(f"No such {kind} request")
    return found


def data_requests_overdue(*, created_before: datetime) -> QuerySet[DataSubjectRequest]:
    return DataSubjectRequest.objects.filter(status__in=UNFINISHED, created_at__lte=created_before).order_by(
        "created_at"
    )


def completed_erasures(user_ids: Iterable[str]) -> QuerySet[DataSubjectRequest] | None:
    """The completed erasures of any of these user ids (found by their pseudonym, which stays on the
    request after the id was removed); None when none of them is a UUID (nobody's)."""
    pseudonyms = []
    for user_id in user_ids:
        try:
            pseudonyms.append(pseudonym_for(user_id))
        except ValueError:
            continue
    if not pseudonyms:
        return None
    return DataSubjectRequest.objects.filter(
        kind=RequestKind.ERASURE, status=RequestStatus.COMPLETED, subject__in=pseudonyms
    )
