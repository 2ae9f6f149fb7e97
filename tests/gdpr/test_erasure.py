"""Erasure (GDPR Art. 17): one step per provider, Stripe first, financial records kept but pseudonymised,
the audit chain intact, nothing reported done while a step failed."""

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import stripe
from django.core.management import call_command
from django.test import Client

from billing.models import Customer, Dispute, Invoice, Order, Payment, Refund, Subscription
from entitlements.models import FamilyGroup, FamilyMembership
from gdpr.audit import verify_chain
from gdpr.models import AuditEvent, AuditEventPersonal, DataSubjectRequest, ErasureStep, RequestKind, RequestStatus
from gdpr.registry import DataSubject, pseudonym_for
from gdpr.services import data_request_create, data_request_retry, data_requests_sweep, erasure_process
from tasks.models import OutboxMessage
from tests.billing.factories import CustomerFactory
from tests.gdpr.support import Seeded, run_to_the_end, scan_database, seed_everywhere
from tests.support.auth import bearer
from tests.support.broker import EventsConsumer
from tests.support.races import race, raised
from tests.support.stripe_fake import STRIPE_KEY, StripeFake
from tests.support.worker import celery_worker, wait_until
from webhooks.models import WebhookEvent

ALICE = uuid.UUID("0190f1a2-7c4e-7d11-8a00-0000000a11ce")
ALICE_EMAIL = "Alice.Liddell@Example.com"

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway refuses to call Stripe inside a transaction


def _erase(client: Client, user_id: uuid.UUID = ALICE, email: str = ALICE_EMAIL) -> Any:
    return client.post(
        "/api/v1/gdpr/erasure", content_type="application/json", HTTP_AUTHORIZATION=bearer(user_id, email)
    )


def _status(client: Client, request_id: str) -> str:
    response = client.get(f"/api/v1/gdpr/erasure/{request_id}", HTTP_AUTHORIZATION=bearer(ALICE))
    assert response.status_code == 200
    return str(response.json()["status"])


CUSTOMER_DELETES = "DELETE /v1/customers/"  # at Stripe
UNAVAILABLE = (500, {"type": "api_error", "message": "Stripe is having a bad day"})
REFUSED = (400, {"type": "invalid_request_error", "message": "This customer cannot be deleted"})


def _features(client: Client) -> list[str]:
    response = client.get("/api/v1/entitlements", HTTP_AUTHORIZATION=bearer(ALICE, ALICE_EMAIL))
    assert response.status_code == 200
    return sorted(feature["key"] for feature in response.json()["features"])


def assert_erased(seeded: Seeded, stripe_sdk: stripe.StripeClient) -> None:
    # Nothing of Alice in any text, JSON or UUID column of any table.
    assert scan_database(seeded.needles) == []
    # The financial records are kept, as the law requires, under the pseudonym.
    pseudonym = pseudonym_for(ALICE)
    customer = Customer.objects.get(id=seeded.customer.id)
    assert customer.user_id == DataSubject(user_id=ALICE, pseudonym=pseudonym).pseudonymous_uuid
    assert (customer.email, customer.stripe_customer_id) == ("", seeded.customer.stripe_customer_id)
    assert customer.stripe_deleted_at is not None
    payment = Payment.objects.get(id=seeded.payment.id)
    assert (payment.amount, payment.currency, payment.stripe_payment_intent_id, payment.created_at) == (
        seeded.payment.amount,
        seeded.payment.currency,
        seeded.payment.stripe_payment_intent_id,
        seeded.payment.created_at,
    )
    refund = Refund.objects.get(id=seeded.refund.id)
    assert (refund.amount, refund.stripe_refund_id) == (seeded.refund.amount, seeded.refund.stripe_refund_id)
    assert refund.note == "Goodwill, asked by [erased] on the phone"
    invoice = Invoice.objects.get(id=seeded.invoice.id)
    assert (invoice.number, invoice.amount_due, invoice.hosted_invoice_url) == ("JIA-0042", 1299, "")
    assert Dispute.objects.get(id=seeded.dispute.id).amount == seeded.dispute.amount
    order = Order.objects.get(id=seeded.order.id)
    assert (order.amount, order.stripe_session_id, order.success_url) == (
        seeded.order.amount,
        seeded.order.stripe_session_id,
        "",
    )
    subscription = Subscription.objects.get(id=seeded.subscription.id)
    assert subscription.status == Subscription.Status.CANCELED
    # At Stripe: the subscription ended first, then the customer went.
    assert stripe_sdk.v1.subscriptions.retrieve(subscription.stripe_subscription_id).status == "canceled"
    with pytest.raises(stripe.InvalidRequestError):
        stripe_sdk.v1.customers.retrieve(customer.stripe_customer_id or "")
    # The family she owned is dissolved; Bob keeps his own data.
    assert not FamilyGroup.objects.filter(id=seeded.family.id).exists()
    assert not FamilyMembership.objects.filter(user_id=seeded.bob).exists()
    assert AuditEvent.objects.filter(action="entitlements.changed", target_id=pseudonym_for(seeded.bob)).exists()
    # Inbox rows stay (they deduplicate), bodies redacted; someone else's event untouched.
    for event in WebhookEvent.objects.filter(id__in=[e.id for e in seeded.events]):
        assert json.loads(event.raw_body)["jia_redacted"] == "erasure"
        assert event.customer_id == ""
    stranger = WebhookEvent.objects.get(id=seeded.stranger_event.id)
    assert stranger.raw_body == seeded.stranger_event.raw_body
    # The audit trail still verifies: it named her by her pseudonym only, and her side data is gone.
    assert verify_chain()[1] is None
    call_command("verify_audit_chain")
    assert AuditEvent.objects.filter(actor_id=pseudonym).exists()
    assert AuditEvent.objects.filter(target_type="user", target_id=pseudonym).exists()
    assert not AuditEventPersonal.objects.filter(event__actor_id=pseudonym).exists()


def test_erasure_leaves_nothing_of_the_user_keeps_the_financial_rows_and_the_audit_chain(
    stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake, export_storage: Path
) -> None:
    # given
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL, stripe_sdk=stripe_sdk)
    client = Client()
    assert _features(client) == ["hd", "offline"]  # and cached
    consumer = EventsConsumer("gdpr.#")
    before = {found.split(" ")[0] for found in scan_database(seeded.needles)}
    assert {  # the scan sees her wherever she is
        "billing_customer.email",
        "billing_customer.user_id",
        "billing_order.success_url",
        "entitlements_familymembership.user_id",
        "entitlements_familyinvitation.email",
        "entitlements_entitlementsnapshot.user_id",
        "webhooks_webhookevent.raw_body",
        "gdpr_auditeventpersonal.metadata",  # her address, in Dave's invitation
        "gdpr_datasubjectrequest.user_id",
        "tasks_outboxmessage.data",
    } <= before
    assert not {found for found in before if found.startswith("gdpr_auditevent.")}  # never in the hash chain

    # when
    response = _erase(client)
    assert response.status_code == 202
    request_id = response.json()["id"]
    done = run_to_the_end(uuid.UUID(request_id))
    data_requests_sweep()  # the completion event is published: the user id goes from our copy

    # then
    assert done.status == RequestStatus.COMPLETED
    assert _status(client, request_id) == "completed"  # she still finds it, by her pseudonym
    assert set(done.steps.values_list("provider", "status")) == {
        ("billing", "completed"),
        ("entitlements", "completed"),
        ("webhooks", "completed"),
        ("gdpr", "completed"),
    }
    assert_erased(seeded, stripe_sdk)
    assert _features(client) == []  # no cached grant survived
    announced = [
        body for body in [json.loads(m.body) for m in consumer.drain(expect=1)] if body["type"].startswith("gdpr.")
    ]
    assert [(b["type"], b["data"]["user_id"]) for b in announced] == [("gdpr.erasure.completed", str(ALICE))]
    assert OutboxMessage.objects.get(type="gdpr.erasure.completed").data["user_id"] is None
    assert AuditEvent.objects.filter(action="gdpr.erasure.completed", target_id=request_id).count() == 1
    assert not list(export_storage.glob("*.zip"))
    consumer.close()


def test_stripe_failing_mid_erasure_leaves_it_unfinished_and_a_rerun_finishes_it(
    stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL, stripe_sdk=stripe_sdk)
    client = Client()
    request_id = _erase(client).json()["id"]
    stripe_fake.fail_next(CUSTOMER_DELETES, *UNAVAILABLE, times=3)  # the subscription is cancelled, then Stripe fails

    outcome = erasure_process(request_id=uuid.UUID(request_id))

    assert outcome is not None and outcome.retry_in is not None and outcome.retry_in > 0
    assert _status(client, request_id) == "pending"  # not completed, waiting for its retry
    billing = ErasureStep.objects.get(request_id=request_id, provider="billing")
    assert (billing.status, billing.attempts) == ("pending", 1)
    assert "StripeUnavailable" in billing.last_error
    assert not ErasureStep.objects.filter(request_id=request_id, status="completed").exists()  # nothing after it
    assert Customer.objects.get(id=seeded.customer.id).email == ALICE_EMAIL
    assert stripe_sdk.v1.subscriptions.retrieve(seeded.subscription.stripe_subscription_id).status == "canceled"
    assert not OutboxMessage.objects.filter(type="gdpr.erasure.completed").exists()

    stripe_fake.failures.clear()
    done = run_to_the_end(uuid.UUID(request_id))

    assert done.status == RequestStatus.COMPLETED
    data_requests_sweep()
    assert_erased(seeded, stripe_sdk)
    assert OutboxMessage.objects.filter(type="subscription.canceled").count() == 1  # cancelled once


def test_a_step_that_keeps_failing_fails_the_request_with_its_reason_never_done(
    monkeypatch: pytest.MonkeyPatch, stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    monkeypatch.setattr(DataSubjectRequest, "retry_policy", replace(DataSubjectRequest.retry_policy, max_attempts=2))
    seed_everywhere(user_id=ALICE, email=ALICE_EMAIL, stripe_sdk=stripe_sdk)
    client = Client()
    request_id = _erase(client).json()["id"]
    stripe_fake.fail_next(CUSTOMER_DELETES, *UNAVAILABLE, times=10)

    failed = run_to_the_end(uuid.UUID(request_id))

    assert failed.status == RequestStatus.FAILED
    assert failed.last_error.startswith("billing: StripeUnavailable")
    assert ErasureStep.objects.get(request_id=request_id, provider="billing").status == "failed"
    assert _status(client, request_id) == "failed"
    audit = AuditEvent.objects.get(action="gdpr.erasure.failed", target_id=request_id)
    assert audit.metadata == {"kind": "erasure", "step": "billing", "error": "StripeUnavailable", "attempts": 2}
    assert not OutboxMessage.objects.filter(type="gdpr.erasure.completed").exists()
    # Asking again returns the failed request: compliance retries it, the user does not start over.
    again = _erase(client)
    assert (again.status_code, again.json()["id"], again.json()["status"]) == (202, request_id, "failed")


def test_a_permanent_stripe_refusal_fails_at_once_and_a_retry_by_staff_finishes_the_erasure(
    stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL, stripe_sdk=stripe_sdk)
    client = Client()
    request_id = uuid.UUID(_erase(client).json()["id"])
    stripe_fake.fail_next(CUSTOMER_DELETES, *REFUSED)

    outcome = erasure_process(request_id=request_id)

    assert outcome is not None and outcome.retry_in is None
    failed = DataSubjectRequest.objects.get(id=request_id)
    assert failed.status == RequestStatus.FAILED
    # what staff read in admin is ours; Stripe's own text is in the log (billing.gateway)
    assert failed.last_error == "billing: StripeRequestFailed: Stripe refused the request"
    assert "This customer cannot be deleted" not in failed.last_error
    assert "cannot be deleted" not in ErasureStep.objects.get(request_id=request_id, provider="billing").last_error
    assert ErasureStep.objects.get(request_id=request_id, provider="billing").attempts == 1  # not retried

    assert data_request_retry(request_id=request_id, staff_id="7") is True
    done = run_to_the_end(request_id)

    assert done.status == RequestStatus.COMPLETED
    data_requests_sweep()
    assert_erased(seeded, stripe_sdk)
    billing = ErasureStep.objects.get(request_id=request_id, provider="billing")
    assert (billing.status, billing.last_error) == ("completed", "")


def test_two_erasure_requests_at_once_make_one() -> None:

    def ask() -> tuple[int, str]:
        response = _erase(Client())
        return response.status_code, response.json()["id"]

    answers = race(ask, ask, ask, ask)

    assert raised(answers) == []
    assert len(answers) == 4
    assert {status for status, _ in answers} == {202}
    assert len({request_id for _, request_id in answers}) == 1
    assert DataSubjectRequest.objects.filter(kind=RequestKind.ERASURE).count() == 1
    assert AuditEvent.objects.filter(action="gdpr.erasure.requested").count() == 1


def test_an_erasure_waits_while_an_event_about_the_user_is_still_to_be_processed(
    stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL, stripe_sdk=stripe_sdk)
    WebhookEvent.objects.filter(id=seeded.events[1].id).update(status=WebhookEvent.Status.FAILED)
    request_id = uuid.UUID(_erase(Client()).json()["id"])

    waiting = run_to_the_end(request_id, rounds=2)

    assert waiting.status == RequestStatus.PENDING
    step = ErasureStep.objects.get(request_id=request_id, provider="webhooks")
    assert (step.status, step.attempts) == ("pending", 2)
    assert "still to be processed" in step.last_error
    assert json.loads(WebhookEvent.objects.get(id=seeded.events[1].id).raw_body)["data"]["object"]["receipt_email"]
    finished = dict(
        ErasureStep.objects.filter(request_id=request_id, status="completed").values_list("provider", "completed_at")
    )
    assert set(finished) == {"billing", "entitlements"}

    WebhookEvent.objects.filter(id=seeded.events[1].id).update(status=WebhookEvent.Status.PROCESSED)
    assert run_to_the_end(request_id).status == RequestStatus.COMPLETED
    # The rerun skipped the finished steps: they ran once.
    for provider, completed_at in finished.items():
        assert ErasureStep.objects.get(request_id=request_id, provider=provider).completed_at == completed_at
    assert AuditEvent.objects.filter(action="customer.pseudonymised").count() == 1
    assert AuditEvent.objects.filter(action="family.dissolved").count() == 1


def test_a_stripe_customer_already_gone_counts_as_deleted(
    stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    # given: a crash right after Stripe deleted the customer, before we recorded it
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL, stripe_sdk=stripe_sdk)
    stripe_sdk.v1.customers.delete(seeded.customer.stripe_customer_id or "")
    request_id = uuid.UUID(_erase(Client()).json()["id"])

    done = run_to_the_end(request_id)

    assert done.status == RequestStatus.COMPLETED
    assert len(stripe_fake.sent(CUSTOMER_DELETES)) == 1  # answered 404: nothing left to delete
    assert Customer.objects.get(id=seeded.customer.id).stripe_deleted_at is not None


def test_a_user_with_no_data_is_erased_at_once() -> None:
    nobody = uuid.uuid4()
    created, _ = data_request_create(kind=RequestKind.ERASURE, user_id=nobody, email="nobody@example.net")

    done = run_to_the_end(created.id)
    data_requests_sweep()

    assert done.status == RequestStatus.COMPLETED
    assert (done.user_id, done.email, done.known_emails) == (None, "", [])
    assert scan_database([str(nobody), "nobody@example.net"]) == []


@pytest.mark.slow
def test_an_erasure_runs_end_to_end_through_real_workers_even_with_stripe_down_at_first(
    monkeypatch: pytest.MonkeyPatch,
    quick_retries: str,
    export_storage: Path,
    stripe_sdk: stripe.StripeClient,
    stripe_fake: StripeFake,
) -> None:
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL, stripe_sdk=stripe_sdk)
    monkeypatch.setenv("STRIPE_API_KEY", STRIPE_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", stripe_fake.base)
    client = Client()
    stripe_fake.proxy.cut()

    with celery_worker(["gdpr", "outbox"], include=quick_retries):
        request_id = _erase(client).json()["id"]
        billing = ErasureStep.objects.filter(request_id=request_id, provider="billing")
        assert wait_until(lambda: billing.filter(attempts__gte=2).exists(), timeout=60)
        assert _status(client, request_id) in ("pending", "running")  # never done while Stripe is down

        stripe_fake.proxy.restore()
        assert wait_until(lambda: _status(client, request_id) == "completed", timeout=90)
        assert wait_until(
            lambda: OutboxMessage.objects.filter(type="gdpr.erasure.completed", published_at__isnull=False).exists()
        )

    data_requests_sweep()
    assert billing.get().status == "completed"
    assert_erased(seeded, stripe_sdk)


def test_two_workers_with_the_same_erasure_run_its_steps_once() -> None:
    CustomerFactory(user_id=ALICE, email=ALICE_EMAIL, stripe_customer_id=None)  # nothing at Stripe
    created, _ = data_request_create(kind=RequestKind.ERASURE, user_id=ALICE, email=ALICE_EMAIL)

    outcomes = race(*[lambda: erasure_process(request_id=created.id)] * 2)

    assert raised(outcomes) == []
    assert len(outcomes) == 2
    assert outcomes.count(None) == 1  # the other found it claimed
    assert AuditEvent.objects.filter(action="customer.pseudonymised").count() == 1
    assert DataSubjectRequest.objects.get(id=created.id).attempts == 1
    assert run_to_the_end(created.id).status == RequestStatus.COMPLETED
