import time
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing.errors import StripeRateLimited
from billing.models import Payment
from gdpr.models import AuditEvent
from tests.billing.factories import PaymentFactory, SubscriptionFactory
from tests.support.auth import staff_client
from tests.support.races import race
from tests.support.stripe_events import delivery, stripe_event
from tests.support.stripe_fake import StripeFake
from tests.webhooks.handlers_for_tests import effects
from webhooks.models import Discrepancy, SyncCursor, WebhookEvent
from webhooks.reconciliation import EVENTS_CURSOR, _cursor_take, events_gap_fill, state_compare
from webhooks.services import webhook_event_process

pytestmark = pytest.mark.django_db(transaction=True)


EVENTS = "GET /v1/events"  # at Stripe


@pytest.fixture
def stripe_api(stripe_fake: StripeFake, settings) -> StripeFake:  # type: ignore[no-untyped-def]
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.RECONCILIATION_EVENTS_PAGE_SIZE = 2
    return stripe_fake


def effect_event(api: StripeFake, seconds_ago: int = 60) -> dict[str, object]:
    obj = {"id": f"obj_{uuid.uuid4().hex[:12]}", "object": "thing"}
    return api.add_event(stripe_event("test.effect", obj, created=int(time.time()) - seconds_ago))


def process_all() -> None:
    for event_id in WebhookEvent.objects.filter(status="received").values_list("id", flat=True):
        webhook_event_process(event_id=event_id)


def test_events_the_inbox_never_received_are_stored_and_processed_once(stripe_api: StripeFake) -> None:
    missed = [effect_event(stripe_api, seconds_ago=100 - i) for i in range(5)]

    first = events_gap_fill()
    process_all()
    again = events_gap_fill()
    process_all()

    assert (first.events_new, again.events_new) == (5, 0)
    assert WebhookEvent.objects.count() == 5
    assert all(effects(event["data"]["object"]["id"]) == 1 for event in missed)  # type: ignore[index]
    assert SyncCursor.objects.get(name=EVENTS_CURSOR).last_event_id == missed[-1]["id"]


def test_an_event_already_in_the_inbox_is_left_untouched(client: Client, stripe_api: StripeFake) -> None:
    delivered = effect_event(stripe_api)
    client.post("/webhooks/stripe/", **delivery(delivered))
    row = WebhookEvent.objects.get()
    webhook_event_process(event_id=row.id)
    before = WebhookEvent.objects.values().get()

    result = events_gap_fill()

    assert (result.events_seen, result.events_new) == (1, 0)
    assert WebhookEvent.objects.values().get() == before
    assert effects(delivered["data"]["object"]["id"]) == 1  # type: ignore[index]


def test_later_runs_page_forward_from_the_cursor(stripe_api: StripeFake) -> None:
    effect_event(stripe_api, seconds_ago=500)
    events_gap_fill()
    cursor = SyncCursor.objects.get(name=EVENTS_CURSOR).last_event_id
    newer = [effect_event(stripe_api, seconds_ago=10 - i) for i in range(3)]
    stripe_api.requests.clear()

    result = events_gap_fill()

    assert result.events_new == 3
    assert stripe_api.sent(EVENTS)[0].params["ending_before"] == cursor
    assert "created[gte]" not in stripe_api.sent(EVENTS)[0].params
    assert SyncCursor.objects.get(name=EVENTS_CURSOR).last_event_id == newer[-1]["id"]


def test_a_rate_limited_listing_keeps_the_stored_pages_and_resumes_from_the_cursor(stripe_api: StripeFake) -> None:
    effect_event(stripe_api, seconds_ago=900)
    events_gap_fill()  # sets the cursor
    newer = [effect_event(stripe_api, seconds_ago=100 - i) for i in range(6)]
    stripe_api.requests.clear()
    stripe_api.fail_next(
        EVENTS, 429, {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many"}, after=1
    )

    with pytest.raises(StripeRateLimited):
        events_gap_fill()
    stored_before_limit = WebhookEvent.objects.count()
    cursor = SyncCursor.objects.get(name=EVENTS_CURSOR)
    resumed = events_gap_fill()

    assert stored_before_limit == 1 + 2  # the first page of the second run was kept
    assert cursor.last_event_id == newer[1]["id"]
    assert stripe_api.sent(EVENTS)[-1 - resumed.pages].params["ending_before"] == cursor.last_event_id
    assert resumed.events_new == 4
    assert WebhookEvent.objects.count() == 7


def test_a_run_while_another_holds_the_cursor_walks_away(stripe_api: StripeFake) -> None:
    effect_event(stripe_api)
    assert _cursor_take(uuid.uuid4())  # another run, still going

    assert events_gap_fill().skipped
    assert WebhookEvent.objects.count() == 0


def test_a_lease_left_by_a_dead_run_expires(stripe_api: StripeFake) -> None:
    effect_event(stripe_api)
    _cursor_take(uuid.uuid4())
    SyncCursor.objects.update(lease_until=timezone.now() - timedelta(seconds=1))

    assert events_gap_fill().events_new == 1


def test_two_runs_at_once_store_each_event_once(stripe_api: StripeFake) -> None:
    for i in range(8):
        effect_event(stripe_api, seconds_ago=100 - i)

    results = race(events_gap_fill, events_gap_fill)

    assert WebhookEvent.objects.count() == 8
    assert sum(result.events_new for result in results) == 8


def payment_objects(api: StripeFake, payment: Payment, *, refunded: int, amount: int | None = None) -> None:
    api.objects[payment.stripe_payment_intent_id] = {  # type: ignore[index]
        "id": payment.stripe_payment_intent_id,
        "object": "payment_intent",
        "amount": amount or payment.amount,
        "amount_received": amount or payment.amount,
        "currency": payment.currency,
        "status": "succeeded",
        "customer": payment.customer.stripe_customer_id,
        "latest_charge": payment.stripe_charge_id,
        "created": 1_767_225_600,
    }
    refunds = (
        [
            {
                "id": "re_outside",
                "object": "refund",
                "amount": refunded,
                "currency": payment.currency,
                "status": "succeeded",
                "charge": payment.stripe_charge_id,
                "created": 1_767_225_700,
            }
        ]
        if refunded
        else []
    )
    api.objects[payment.stripe_charge_id] = {  # type: ignore[index]
        "id": payment.stripe_charge_id,
        "object": "charge",
        "amount": amount or payment.amount,
        "amount_refunded": refunded,
        "refunded": refunded == payment.amount,
        "currency": payment.currency,
        "payment_intent": payment.stripe_payment_intent_id,
        "customer": payment.customer.stripe_customer_id,
        "refunds": {"object": "list", "data": refunds, "has_more": False},
        "created": 1_767_225_600,
    }


def test_a_payment_refunded_in_stripe_but_not_here_is_recorded_and_fixed(stripe_api: StripeFake) -> None:
    payment = PaymentFactory(amount=2000)
    payment_objects(stripe_api, payment, refunded=500)

    result = state_compare()

    payment.refresh_from_db()
    assert payment.refunded_amount == 500
    discrepancy = Discrepancy.objects.get()
    assert (discrepancy.kind, discrepancy.our_value, discrepancy.stripe_value) == (
        "payment_refunded_amount",
        "0",
        "500",
    )
    assert discrepancy.resolution == "fixed_from_stripe"
    assert (result.opened, result.fixed) == (1, 1)
    assert AuditEvent.objects.filter(action="reconciliation.resynced", actor_type="system").count() == 1
    assert state_compare().opened == 0


def test_a_difference_we_cannot_fix_stays_open_once_and_resolves_when_both_agree(stripe_api: StripeFake) -> None:
    payment = PaymentFactory(amount=2000)
    payment_objects(stripe_api, payment, refunded=0, amount=2500)

    state_compare()
    state_compare()

    open_ones = Discrepancy.objects.filter(resolved_at__isnull=True)
    assert [(d.kind, d.our_value, d.stripe_value) for d in open_ones] == [("payment_amount", "2000", "2500")]
    payment_objects(stripe_api, payment, refunded=0)
    state_compare()
    assert Discrepancy.objects.get().resolution == "agreed"


def test_a_subscription_canceled_in_stripe_is_brought_up_to_date(stripe_api: StripeFake) -> None:
    subscription = SubscriptionFactory()
    stripe_api.objects[subscription.stripe_subscription_id] = {
        "id": subscription.stripe_subscription_id,
        "object": "subscription",
        "status": "canceled",
        "customer": subscription.customer.stripe_customer_id,
        "cancel_at_period_end": False,
        "current_period_start": int(subscription.current_period_start.timestamp()),
        "current_period_end": int(subscription.current_period_end.timestamp()),
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": subscription.price.stripe_price_id}}]},
        "metadata": {},
        "created": 1_767_225_600,
    }

    state_compare()

    subscription.refresh_from_db()
    assert subscription.status == "canceled"
    assert Discrepancy.objects.get().kind == "subscription_status"


def test_finance_marks_a_discrepancy_resolved_with_a_reason_and_it_is_audited(stripe_api: StripeFake) -> None:
    payment = PaymentFactory(amount=2000)
    payment_objects(stripe_api, payment, refunded=0, amount=2500)
    state_compare()
    discrepancy = Discrepancy.objects.get()
    alice = staff_client("alice", "finance")
    url = "/admin/webhooks/discrepancy/"

    confirm = alice.post(url, {"action": "mark_resolved", "_selected_action": [str(discrepancy.id)]})
    no_reason = alice.post(url, {"action": "mark_resolved", "_selected_action": [str(discrepancy.id)], "apply": "1"})
    done = alice.post(
        url,
        {"action": "mark_resolved", "_selected_action": [str(discrepancy.id)], "apply": "1", "reason": "test charge"},
    )

    assert confirm.status_code == 200
    assert b"Mark 1 discrepancy resolved" in confirm.content
    assert no_reason.status_code == 200  # the form again, nothing resolved
    assert done.status_code == 302
    discrepancy.refresh_from_db()
    assert (discrepancy.resolution, discrepancy.resolution_note) == ("manual", "test charge")
    audit = AuditEvent.objects.get(action="reconciliation.resolved")
    assert audit.metadata["reason"] == "test charge"


def test_finance_resyncs_from_stripe_from_the_admin(stripe_api: StripeFake) -> None:
    payment = PaymentFactory(amount=2000)
    payment_objects(stripe_api, payment, refunded=0)
    state_compare()
    Payment.objects.filter(id=payment.id).update(status="failed")  # drifted since
    discrepancy = Discrepancy.objects.create(
        kind="payment_status", object_type="payment", object_id=payment.id, stripe_id="pi", our_value="failed"
    )

    staff_client("alice", "finance").post(
        "/admin/webhooks/discrepancy/", {"action": "resync_from_stripe", "_selected_action": [str(discrepancy.id)]}
    )

    assert Payment.objects.get(id=payment.id).status == "succeeded"
    assert Discrepancy.objects.get(id=discrepancy.id).resolution == "fixed_from_stripe"
    assert AuditEvent.objects.filter(action="reconciliation.resynced", actor_type="staff").count() == 1


def test_an_intent_in_a_status_stripe_does_not_document_is_reported_not_guessed_and_the_run_goes_on(
    stripe_api: StripeFake,
) -> None:
    # given: one intent we cannot read (the webhook services refuse it too), one payment to fix
    unreadable, refunded = PaymentFactory(amount=2000), PaymentFactory(amount=2000)
    payment_objects(stripe_api, unreadable, refunded=0)
    stripe_api.objects[unreadable.stripe_payment_intent_id]["status"] = "requires_source"  # type: ignore[index]
    payment_objects(stripe_api, refunded, refunded=500)

    result = state_compare()

    assert [line.split(":")[0] for line in result.unreachable] == [str(unreadable.id)]
    assert "payment intent status 'requires_source' is unknown" in result.unreachable[0]
    assert Payment.objects.get(id=unreadable.id).status == "succeeded"
    assert not Discrepancy.objects.filter(object_id=unreadable.id).exists()
    assert Payment.objects.get(id=refunded.id).refunded_amount == 500
