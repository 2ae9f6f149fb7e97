"""The finance dashboard: the admin's landing page for finance, each figure linking to its filtered list,
and a fixed number of queries at 100,000 payments."""

import re
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import Payment, Price, Refund, Subscription
from gdpr.models import DataSubjectRequest, RequestKind, RequestStatus
from tasks.models import OutboxMessage, OutboxStatus
from tests.billing.factories import CustomerFactory, PaymentFactory, PriceFactory, RefundFactory, SubscriptionFactory
from tests.support.auth import staff_client
from webhooks.models import Discrepancy, WebhookEvent

pytestmark = pytest.mark.django_db

# Session, user, OTP device, role groups (4); one per panel: subscriptions by plan, payments per day, refunds
# per day, outbox, dead webhooks, discrepancies, GDPR requests (7); the app list's permissions (2) and recent
# actions (1); the session's idle expiry moved on (3: savepoint, update, release).
DASHBOARD_QUERIES = 17


def dashboard(client: Client) -> dict:
    response = client.get("/admin/")
    assert response.status_code == 200
    return response.context["dashboard"]


def test_active_subscriptions_and_mrr_by_plan_and_currency() -> None:
    monthly_eur = PriceFactory(plan__code="family", unit_amount=1299, currency="eur", interval=Price.Interval.MONTH)
    yearly_eur = PriceFactory(plan=monthly_eur.plan, unit_amount=12000, currency="eur", interval=Price.Interval.YEAR)
    monthly_usd = PriceFactory(plan=monthly_eur.plan, unit_amount=1499, currency="usd")
    SubscriptionFactory.create_batch(2, price=monthly_eur)
    SubscriptionFactory(price=yearly_eur)  # 120.00 a year: 10.00 a month
    SubscriptionFactory(price=monthly_eur, status=Subscription.Status.TRIALING)  # active, pays nothing yet
    SubscriptionFactory(price=monthly_eur, status=Subscription.Status.CANCELED)  # not active
    SubscriptionFactory(price=monthly_usd, status=Subscription.Status.PAST_DUE)

    rows = dashboard(staff_client("anna", "finance"))["subscriptions"]

    assert [(r["plan"], r["currency"], r["count"], r["mrr"]) for r in rows] == [
        ("family", "EUR", 4, "35.98 EUR"),
        ("family", "USD", 1, "14.99 USD"),
    ]
    assert rows[0]["url"].startswith("/admin/billing/subscription/?plan__id__exact=")
    listed = staff_client("bea", "finance").get(rows[0]["url"]).context["cl"].result_list
    assert len(listed) == 5  # every active subscription of the plan, whatever its currency


def test_payments_and_refunds_per_day_for_the_last_30_days_link_to_that_day() -> None:
    now = timezone.now()
    PaymentFactory.create_batch(3, created_at=now - timedelta(days=2), amount=1000)
    PaymentFactory(created_at=now - timedelta(days=40))  # older than the chart
    PaymentFactory(created_at=now, status=Payment.Status.FAILED)  # not money in
    RefundFactory(
        created_at=now - timedelta(days=2), amount=500, payment=PaymentFactory(created_at=now - timedelta(days=50))
    )

    money = dashboard(staff_client("anna", "finance"))["money"]

    assert len(money["days"]) == 30
    two_days_ago = money["days"][-3]
    assert (two_days_ago.payments, two_days_ago.refunds) == (3, 1)
    assert money["tallest"] == 3
    assert money["totals"] == [{"currency": "EUR", "payments": "30.00 EUR", "refunds": "5.00 EUR"}]
    day = two_days_ago.day.isoformat()
    assert two_days_ago.url == f"/admin/billing/payment/?created_at__range__gte={day}&created_at__range__lte={day}"
    assert len(staff_client("bea", "finance").get(two_days_ago.url).context["cl"].result_list) == 3


def test_what_needs_attention_is_counted_and_links_to_its_filtered_list() -> None:
    WebhookEvent.objects.create(
        event_id="evt_dead",
        type="invoice.paid",
        status="dead",
        livemode=False,
        raw_body="{}",
        provider_created_at=timezone.now(),
    )
    Discrepancy.objects.create(kind="payment_status", object_type="payment", object_id=uuid.uuid4(), stripe_id="pi_x")
    old = DataSubjectRequest.objects.create(kind=RequestKind.ERASURE, status=RequestStatus.FAILED, subject="s1")
    DataSubjectRequest.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=22))
    DataSubjectRequest.objects.create(kind=RequestKind.EXPORT, subject="s2")  # new: not near its deadline
    OutboxMessage.objects.create(type="x", subject="a", data={}, status=OutboxStatus.DEAD)
    OutboxMessage.objects.create(type="x", subject="b", data={})

    figures = {f.label.split(" (")[0]: f for f in dashboard(staff_client("anna", "finance"))["attention"]}

    assert {label: f.value for label, f in figures.items()} == {
        "Dead webhook events": 1,
        "Open reconciliation discrepancies": 1,
        "GDPR requests open over 20 days": 1,
        "Outbox backlog": 1,
        "Dead outbox messages": 1,
    }
    assert figures["Dead webhook events"].url == "/admin/webhooks/webhookevent/?status__exact=dead"
    assert figures["Open reconciliation discrepancies"].url == "/admin/webhooks/discrepancy/?state=open"
    assert figures["Dead outbox messages"].url == "/admin/tasks/outboxmessage/?status__exact=dead"  # #16's admin
    compliance = staff_client("carla", "compliance")
    assert list(compliance.get(figures["GDPR requests open over 20 days"].url).context["cl"].result_list) == [old]
    finance = staff_client("bea", "finance")
    assert len(finance.get(figures["Dead webhook events"].url).context["cl"].result_list) == 1


def test_the_dashboard_is_for_finance_and_uses_nothing_from_outside() -> None:
    finance = staff_client("anna", "finance").get("/admin/").content.decode()
    support = staff_client("sam", "support").get("/admin/")

    assert 'id="dashboard"' in finance and "<svg" in finance
    assert not re.search(r"""(src|href)=["']https?://""", finance)  # no CDN: the chart is drawn here
    assert support.status_code == 200 and support.context.get("dashboard") is None


def _bulk_payments(count: int) -> None:
    """`count` succeeded payments spread over the last 60 days, written by PostgreSQL itself."""
    customer = CustomerFactory()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO billing_payment (id, customer_id, stripe_payment_intent_id, amount, currency, status,
                refunded_amount, failure_code, failure_message, dispute_reason, stripe_updated_at, created_at,
                updated_at)
            SELECT gen_random_uuid(), %s, 'pi_bulk_' || g, 1000 + g %% 500, 'eur', 'succeeded', 0, '', '', '', now(),
                now() - (g %% 60) * interval '1 day' - (g %% 3600) * interval '1 second', now()
            FROM generate_series(1, %s) AS g
            """,
            [customer.pk, count],
        )
        cursor.execute("ANALYZE billing_payment")


def test_the_dashboard_costs_the_same_queries_with_3_or_100000_payments(capsys: pytest.CaptureFixture[str]) -> None:
    client = staff_client("anna", "finance")
    SubscriptionFactory()
    RefundFactory(payment=PaymentFactory())
    PaymentFactory.create_batch(2)
    client.get("/admin/")  # warm: the session's first save

    with CaptureQueriesContext(connection) as few:
        assert client.get("/admin/").status_code == 200
    _bulk_payments(100_000)
    Refund.objects.bulk_create(
        Refund(payment=payment, amount=100, currency="eur", status=Refund.Status.SUCCEEDED)
        for payment in Payment.objects.order_by("-created_at")[:1000]
    )
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as many:
        response = client.get("/admin/")
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert sum(day.payments for day in response.context["dashboard"]["money"]["days"]) > 45_000
    assert len(many.captured_queries) == len(few.captured_queries) == DASHBOARD_QUERIES
    with capsys.disabled():  # the figure for the record, not an assertion
        print(f"\ndashboard at 100,003 payments: {len(many.captured_queries)} queries, {elapsed * 1000:.0f} ms")
