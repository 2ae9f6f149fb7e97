"""The webhook inbox's personal data for GDPR export and erasure (registered in apps.ready()).

An event is the user's when it is about their Stripe customer (`customer_id`) or some string of its raw
body equals (exactly, case-insensitively) their user id, one of their Stripe customer ids or one of
their addresses (API.md, "Personal data"): never a substring, so `jimbob@x.com`'s events are not
`bob@x.com`'s. Erasure keeps every row (the unique event id is what
deduplicates redeliveries) but redacts the raw body to its envelope and blanks the customer id. It waits
(a retry) while such an event is still to be processed: processing needs the body.
"""

import json
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from billing.models import Customer
from gdpr.registry import DataSubject, JSONStringsAny, PersonalDataProvider, ProviderNotReady, Tables, rows
from webhooks.models import EventStatus, WebhookEvent
from webhooks.services import webhook_event_is_redacted, webhook_event_redacted_body

_UNFINISHED = (EventStatus.RECEIVED, EventStatus.PROCESSING, EventStatus.FAILED)


def _events_of(subject: DataSubject) -> QuerySet[WebhookEvent]:
    # After billing's step the customer is found under the pseudonymous id; the Stripe id stays.
    stripe_ids = [
        stripe_id
        for stripe_id in Customer.objects.filter(user_id__in=[subject.user_id, subject.pseudonymous_uuid]).values_list(
            "stripe_customer_id", flat=True
        )
        if stripe_id
    ]
    about = Q(customer_id__in=stripe_ids) | Q(JSONStringsAny("raw_body", [*subject.identifiers, *stripe_ids]))
    return WebhookEvent.objects.filter(about)


def _payload(raw_body: str) -> Any:
    try:
        return json.loads(raw_body)
    except ValueError:
        return raw_body


def webhooks_export(*, subject: DataSubject) -> Tables:
    """Each event's columns, its raw body as `payload` (parsed), in the order they were received."""
    return {"stripe_events": [{**row, "payload": _payload(row.pop("raw_body"))} for row in rows(_events_of(subject))]}


def webhooks_erase(*, subject: DataSubject) -> None:
    events = _events_of(subject)
    waiting = events.filter(status__in=_UNFINISHED).count()
    if waiting:
        raise ProviderNotReady(f"{waiting} webhook event(s) about the user are still to be processed")
    with transaction.atomic():
        changed = []
        for event in events.select_for_update().order_by("id"):
            if not event.customer_id and webhook_event_is_redacted(event):
                continue
            event.raw_body = webhook_event_redacted_body(event, reason="erasure")
            event.customer_id = ""
            changed.append(event)
        WebhookEvent.objects.bulk_update(changed, ["raw_body", "customer_id"])


PROVIDER = PersonalDataProvider(
    name="webhooks",
    order=30,
    models=(WebhookEvent,),
    export=webhooks_export,
    erase=webhooks_erase,
)
