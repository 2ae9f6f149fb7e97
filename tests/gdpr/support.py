"""A user with data in every app, a scan of the whole database, and a driver for requests in-process."""

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import stripe
from django.db import connection, transaction
from django.test import RequestFactory
from django.utils import timezone

from billing import gateway
from billing.models import Customer, Dispute, Invoice, Order, Payment, Price, Refund, Subscription
from billing.services import subscription_upsert_from_stripe
from entitlements.models import FamilyGroup
from entitlements.services import (
    entitlements_refresh,
    family_group_create,
    family_invitation_accept,
    family_invitation_create,
)
from gdpr import audit
from gdpr.models import DataSubjectRequest, RequestKind, RequestStatus
from gdpr.services import data_request_create, erasure_process, export_process
from tasks.outbox import outbox_dispatch_pending
from tests.billing.factories import (
    CustomerFactory,
    DisputeFactory,
    InvoiceFactory,
    OrderFactory,
    PaymentFactory,
    PriceFactory,
    RefundFactory,
    SubscriptionFactory,
)
from tests.entitlements.factories import plan_with, subscribe
from tests.support.stripe_events import inbox_event
from tests.support.stripe_setup import customer_with_card, subscription_for
from webhooks.models import WebhookEvent

ALICE_NAME = "Alice Liddell"
BOB_EMAIL = "bob@example.org"
CAROL_EMAIL = "carol@example.org"


def family_price() -> Price:
    plan = plan_with(["hd", "offline"], family_seats=3, code=f"family-{uuid.uuid4().hex[:6]}")
    return PriceFactory(plan=plan, stripe_price_id=f"price_{uuid.uuid4().hex[:12]}", unit_amount=1299)


@dataclass
class Seeded:
    user_id: uuid.UUID
    email: str
    bob: uuid.UUID
    dave: uuid.UUID
    customer: Customer
    subscription: Subscription
    order: Order
    payment: Payment
    refund: Refund
    invoice: Invoice
    dispute: Dispute
    family: FamilyGroup
    events: list[WebhookEvent]
    stranger_event: WebhookEvent

    @property
    def needles(self) -> list[str]:
        """What must not be left anywhere after an erasure."""
        return [str(self.user_id), self.user_id.hex, self.email, "Liddell"]


def seed_everywhere(*, user_id: uuid.UUID, email: str, stripe_sdk: stripe.StripeClient | None = None) -> Seeded:
    """A user (with their email in mixed case, as a token may carry it) who has bought a family plan,
    invited Bob (who joined) and Carol, been invited by Dave, paid, been refunded, whose Stripe events
    are in the inbox and whose actions are in the audit trail and the outbox."""
    bob, dave = uuid.uuid4(), uuid.uuid4()
    price = family_price()
    if stripe_sdk is not None:
        stripe_customer = customer_with_card(
            stripe_sdk, email=email, name=ALICE_NAME, metadata={"user_id": str(user_id)}
        )
        stripe_subscription = gateway.subscription_retrieve(subscription_for(stripe_sdk, stripe_customer["id"], price))
        customer = CustomerFactory(user_id=user_id, email=email, stripe_customer_id=stripe_customer["id"])
        with transaction.atomic():
            subscription_upsert_from_stripe(
                stripe_subscription=stripe_subscription, event_created=datetime(2026, 1, 1, tzinfo=UTC)
            )
        subscription = Subscription.objects.get(customer=customer)
    else:
        customer = CustomerFactory(user_id=user_id, email=email)
        subscription = SubscriptionFactory(customer=customer, price=price, plan=price.plan)
        stripe_customer = {
            "id": customer.stripe_customer_id,
            "object": "customer",
            "email": email,
            "name": ALICE_NAME,
            "metadata": {"user_id": str(user_id)},
        }
    order = OrderFactory(
        customer=customer,
        price=price,
        success_url=f"https://app.example/thanks?email={email}",
        stripe_subscription_id=subscription.stripe_subscription_id,
        status=Order.Status.COMPLETED,
    )
    payment = PaymentFactory(customer=customer, subscription=subscription, order=order, amount=1299)
    refund = RefundFactory(payment=payment, amount=299, note=f"Goodwill, asked by {email} on the phone")
    invoice = InvoiceFactory(customer=customer, subscription=subscription, number="JIA-0042")
    dispute = DisputeFactory(payment=payment, amount=1299)

    family_group_create(owner_user_id=user_id, owner_email=email)
    _, token = family_invitation_create(owner_user_id=user_id, email=BOB_EMAIL)
    family_invitation_accept(token=token, user_id=bob, email=BOB_EMAIL)
    family_invitation_create(owner_user_id=user_id, email=CAROL_EMAIL)
    subscribe(dave, price.plan)
    family_group_create(owner_user_id=dave, owner_email="dave@example.org")
    family_invitation_create(owner_user_id=dave, email=email)
    entitlements_refresh(user_ids={user_id, bob, dave})

    received = timezone.now() - timedelta(minutes=5)
    events = [
        inbox_event(
            "customer.updated",
            stripe_customer,
            customer_id=stripe_customer["id"],
            status="processed",
            received_at=received,
        ),
        inbox_event(
            "payment_intent.succeeded",
            {"id": payment.stripe_payment_intent_id, "object": "payment_intent", "receipt_email": email},
            customer_id=stripe_customer["id"],
            status="processed",
            received_at=received,
        ),
    ]
    stranger = inbox_event(
        "customer.updated",
        {"id": "cus_stranger", "object": "customer", "email": "stranger@example.net"},
        customer_id="cus_stranger",
        status="processed",
        received_at=received,
    )
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.23", HTTP_USER_AGENT="JiaApp/5.1 (iPhone)")
    data_request_create(kind=RequestKind.EXPORT, user_id=user_id, email=email, request=request)
    with transaction.atomic():
        audit.record(
            action=audit.AuditAction.ENTITLEMENTS_CHANGED,
            actor_type=audit.ActorType.SYSTEM,
            target_type="user",
            target_id=str(user_id),
            metadata={"user_id": str(user_id), "added": ["hd"], "removed": []},
        )
    outbox_dispatch_pending()
    return Seeded(
        user_id=user_id,
        email=email,
        bob=bob,
        dave=dave,
        customer=customer,
        subscription=subscription,
        order=order,
        payment=payment,
        refund=refund,
        invoice=invoice,
        dispute=dispute,
        family=FamilyGroup.objects.get(owner_user_id=user_id),
        events=events,
        stranger_event=stranger,
    )


TEXT_TYPES = ("text", "character varying", "character", "jsonb", "json", "uuid")


def scan_database(needles: list[str]) -> list[str]:
    """Every `table.column` (text, JSON or UUID, in any table of the schema) holding one of the needles."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type = ANY(%s) ORDER BY table_name, column_name",
            [list(TEXT_TYPES)],
        )
        columns = cursor.fetchall()
        for table, column in columns:
            for needle in needles:
                cursor.execute(
                    f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE %s',  # noqa: S608 - catalog names
                    [f"%{needle}%"],
                )
                if cursor.fetchone()[0]:
                    found.append(f"{table}.{column} holds {needle!r}")
    return found


def run_to_the_end(request_id: uuid.UUID, *, rounds: int = 8) -> DataSubjectRequest:
    """What the workers would do, in-process: publish due domain events, run the request, repeat while
    it waits for a retry (without waiting out the backoff)."""
    for _ in range(rounds):
        outbox_dispatch_pending()
        data_request = DataSubjectRequest.objects.get(id=request_id)
        process = export_process if data_request.kind == RequestKind.EXPORT else erasure_process
        process(request_id=request_id)
        data_request.refresh_from_db()
        if data_request.status not in (RequestStatus.PENDING, RequestStatus.RUNNING):
            outbox_dispatch_pending()
            return data_request
        time.sleep(0.05)
    return DataSubjectRequest.objects.get(id=request_id)
