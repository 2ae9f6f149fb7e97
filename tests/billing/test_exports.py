"""Month-end exports: payments, refunds and subscriptions through the one CSV helper (formula-neutralised,
streamed, audited), for finance only; "open in Stripe" links on every object with a Stripe id."""

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from django.test import Client

from billing.money import to_minor_units
from billing.stripe_dashboard import stripe_dashboard_url
from gdpr.models import AuditEvent
from tests.billing.factories import CustomerFactory, OrderFactory, PaymentFactory, RefundFactory, SubscriptionFactory
from tests.support.auth import staff_client

pytestmark = pytest.mark.django_db


def export(client: Client, path: str, *objects: Any) -> Any:
    return client.post(path, {"action": "export_csv", "_selected_action": [str(o.pk) for o in objects]})


def rows(response: Any) -> list[dict[str, str]]:
    assert isinstance(response, StreamingHttpResponse)
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize(
    ("path", "name", "make", "column"),
    [
        ("/admin/billing/payment/", "payments", lambda c: PaymentFactory(customer=c), "email"),
        ("/admin/billing/refund/", "refunds", lambda c: RefundFactory(payment=PaymentFactory(customer=c)), "email"),
        ("/admin/billing/subscription/", "subscriptions", lambda c: SubscriptionFactory(customer=c), "email"),
    ],
)
def test_each_export_is_streamed_neutralised_and_audited(path: str, name: str, make: Any, column: str) -> None:
    evil = CustomerFactory(email="=HYPERLINK(evil)")
    first, second = make(evil), make(CustomerFactory())
    finance = staff_client("anna", "finance")

    response = export(finance, f"{path}?q=", first, second)

    assert response["Content-Disposition"].startswith(f'attachment; filename="{name}-')
    exported = rows(response)
    assert len(exported) == 2
    assert "'=HYPERLINK(evil)" in [row[column] for row in exported]  # shown, never run by a spreadsheet
    event = AuditEvent.objects.get(action="admin.exported")
    assert (event.actor_type, event.target_type, event.metadata) == ("staff", name, {"rows": 2})
    assert event.personal.metadata == {"filters": "q="}


@pytest.mark.parametrize("path", ["/admin/billing/payment/", "/admin/billing/refund/", "/admin/billing/subscription/"])
def test_support_gets_403_exporting(path: str) -> None:
    target = {"/admin/billing/payment/": PaymentFactory, "/admin/billing/refund/": RefundFactory}.get(
        path, SubscriptionFactory
    )()
    support = staff_client("sam", "support")

    assert "export_csv" not in support.get(path).content.decode()
    assert export(support, path, target).status_code == 403
    assert not AuditEvent.objects.filter(action="admin.exported").exists()


def test_the_refund_export_carries_amounts_in_both_forms() -> None:
    refund = RefundFactory(amount=1299, created_at=datetime(2026, 1, 31, tzinfo=UTC))

    [row] = rows(export(staff_client("anna", "finance"), "/admin/billing/refund/", refund))

    assert (row["amount"], row["currency"], row["amount_minor"], row["payment_id"]) == (
        "12.99",
        "EUR",
        "1299",
        str(refund.payment_id),
    )


@pytest.mark.parametrize(
    ("stripe_id", "url"),
    [
        ("cus_1", "https://dashboard.stripe.com/test/customers/cus_1"),
        ("sub_1", "https://dashboard.stripe.com/test/subscriptions/sub_1"),
        ("pi_1", "https://dashboard.stripe.com/test/payments/pi_1"),
        ("in_1", "https://dashboard.stripe.com/test/invoices/in_1"),
        ("re_1", "https://dashboard.stripe.com/test/refunds/re_1"),
        ("evt_1", "https://dashboard.stripe.com/test/events/evt_1"),
        ("", None),
        ("nonsense", None),
    ],
)
def test_stripe_ids_link_to_their_dashboard_page(stripe_id: str, url: str | None) -> None:
    assert stripe_dashboard_url(stripe_id) == url


def test_live_mode_links_to_the_live_dashboard(settings: Any) -> None:
    settings.STRIPE_LIVEMODE = True

    assert stripe_dashboard_url("pi_1") == "https://dashboard.stripe.com/payments/pi_1"


@pytest.mark.parametrize(
    ("path", "make", "stripe_id"),
    [
        ("/admin/billing/customer/", CustomerFactory, "stripe_customer_id"),
        ("/admin/billing/order/", OrderFactory, "stripe_session_id"),
        ("/admin/billing/subscription/", SubscriptionFactory, "stripe_subscription_id"),
        ("/admin/billing/payment/", PaymentFactory, "stripe_payment_intent_id"),
        ("/admin/billing/refund/", RefundFactory, "stripe_refund_id"),
    ],
)
def test_lists_and_pages_open_objects_in_stripe(path: str, make: Any, stripe_id: str) -> None:
    obj = make()
    support = staff_client("sam", "support")
    link = stripe_dashboard_url(getattr(obj, stripe_id))

    assert link and link in support.get(path).content.decode()
    assert link in support.get(f"{path}{obj.pk}/change/").content.decode()


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [("12.99", "eur", 1299), ("12.9", "eur", 1290), ("12", "eur", 1200), ("500", "jpy", 500), ("1.234", "kwd", 1234)],
)
def test_amounts_parse_exactly_in_their_currency(typed: str, currency: str, minor: int) -> None:
    assert to_minor_units(typed, currency) == minor


@pytest.mark.parametrize("typed", ["12,99", "1,299.00", "1 299", "12.", ".5", "1e3", "+5", "-5", "NaN", "١٢", ""])
def test_anything_else_is_refused_rather_than_guessed(typed: str) -> None:
    with pytest.raises(ValueError):
        to_minor_units(typed, "eur")
